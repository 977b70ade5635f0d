"""Rows (dicts) as Parquet tables: the encoding rules of docs/results-schema.md (a column keeps
one type: lists and dicts as JSON text; a column mixing types holds JSON text)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from resweep.fileio import atomic_path
from resweep.metrics.directions import metric_direction
from resweep.status import Status


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _scalar(value: Any) -> Any:
    """Parquet-friendly: lists and dicts become JSON text so a column keeps one type."""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def better(metric: str, mode: str | None = None) -> str:
    """Direction in which a metric improves: the objective's mode, else the one table of directions."""
    return metric_direction(metric, mode)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with possibly different keys) as a table; a column mixing types holds JSON text."""
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for key in columns:
        columns[key] = [_plain(row.get(key)) for row in rows]
    return pa.table({k: _column(v) for k, v in columns.items()}) if rows else pa.table({})


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Status) else value


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v) if not isinstance(v, str) else v for v in values])


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(rows_to_table(rows), tmp)
