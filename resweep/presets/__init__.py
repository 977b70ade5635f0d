"""Study presets shipped with the package: the papers' ablations and the demo.

``resweep run preset:NAME`` (or ``load_preset(NAME)``) loads ``resweep/presets/NAME.yaml``.
``resweep presets`` lists them from the YAML text alone (:func:`preset_summaries`): listing never
resolves data paths, so it works before ``$RESWEEP_DATA`` is set and says which variables each
preset needs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from resweep.errors import ConfigError

# $VAR and ${VAR}, as os.path.expandvars reads them in config paths (resweep.config.expand_path)
_ENV_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def preset_dir() -> Path:
    return Path(str(resources.files(__package__)))


def list_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset '{name}'. Known: {', '.join(list_presets())}")
    return path


def load_preset(name: str, *, paper_schedule: bool = False):
    from resweep.study.spec import load_study

    return load_study(preset_path(name), paper_schedule=paper_schedule)


@dataclass(frozen=True)
class PresetSummary:
    """What ``resweep presets`` prints of one preset, read without validating or resolving it."""

    name: str
    description: str  # its start, on one line
    paper_table: str | None
    env_vars: tuple[str, ...]  # environment variables its paths use ($RESWEEP_DATA, ...)
    problem: str | None = None  # the YAML could not be read

    @property
    def missing_env_vars(self) -> tuple[str, ...]:
        return tuple(v for v in self.env_vars if v not in os.environ)


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list | tuple):
        return [s for value in node for s in _strings(value)]
    return []


def _short(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def preset_summary(name: str) -> PresetSummary:
    from resweep.config import read_yaml

    try:
        data = read_yaml(preset_path(name))
    except ConfigError as exc:
        return PresetSummary(name, "", None, (), problem=str(exc))
    description = _short(str(data.get("description") or ""))
    paper = data.get("paper")
    table = str(paper.get("table")) if isinstance(paper, dict) and paper.get("table") else None
    # comments are not values, so only real paths count; descriptions mention no variables
    values = _strings({k: v for k, v in data.items() if k != "description"})
    env_vars = tuple(dict.fromkeys(m for text in values for m in _ENV_VAR.findall(text)))
    return PresetSummary(name, description, table, env_vars)


def preset_summaries() -> list[PresetSummary]:
    return [preset_summary(name) for name in list_presets()]


def format_preset_line(summary: PresetSummary) -> str:
    """``preset:NAME  [paper table]  needs $VAR (not set)``, and the start of the description
    on a second, indented line."""
    if summary.problem:
        return f"preset:{summary.name}  (cannot read: {summary.problem})"
    head = f"preset:{summary.name:14s}"
    if summary.paper_table:
        head += f"  [{summary.paper_table}]"
    if summary.env_vars:
        head += "  needs " + ", ".join(
            f"${v}{'' if v in os.environ else ' (not set)'}" for v in summary.env_vars)
    head = head.rstrip()
    return f"{head}\n    {summary.description}" if summary.description else head
