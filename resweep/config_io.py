"""Reading config files and reporting their errors: YAML with line numbers, paths with ``~``
and ``$VARS``, pydantic errors as one ConfigError naming the file and the dotted field.

No pydantic models live here (they are in :mod:`resweep.config`, which re-exports these)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from resweep.errors import ConfigError


def expand_path(value: Any) -> Any:
    """``~`` and ``$VAR`` in paths (presets say ``$RESWEEP_DATA/CBSD432``); unset variables are errors."""
    if value is None or not isinstance(value, str | Path):
        return value
    text = os.path.expanduser(os.path.expandvars(str(value)))
    if "$" in text:
        missing = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
        raise ValueError(
            f"environment variable {', '.join(missing)} is not set (path '{value}'); "
            "set it to the folder that holds the datasets"
        )
    return text


def get_dotted(data: dict[str, Any], path: str, default: Any = None) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def config_error(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    first_field = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if loc == "methods" and msg.startswith("methods."):
            # a method's own config error carries its full path (see _parse_methods)
            for item in msg.split("\n"):
                path, _, text = item.partition(": ")
                first_field = first_field or path
                lines.append(f"  {path}: {text}")
            continue
        first_field = first_field or loc
        got = err.get("input")
        got_text = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        lines.append(f"  {loc or '<root>'}: {msg}{got_text}")
    return ConfigError("invalid configuration:\n" + "\n".join(lines), source=source, field=first_field)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with errors that name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"file not found: {path}", source=str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML{where}: {problem}", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {type(data).__name__}", source=str(path)
        )
    return data
