"""Study presets shipped with the package: the papers' ablations and the demo.

``resweep run preset:NAME`` (or ``load_preset(NAME)``) loads ``resweep/presets/NAME.yaml``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from resweep.errors import ConfigError


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
