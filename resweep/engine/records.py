"""Run records on disk: learning curves and per-image results as Parquet, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PER_IMAGE_KEY = "per_image"
#: a report's caveats (methods' notes(), e.g. "stand-in encoder, not the paper's setting"):
#: a trial-level fact, kept in trials.parquet's ``notes`` column and out of the learning curves
NOTES_KEY = "notes"


def write_parquet_atomic(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write rows (dicts with possibly different keys) to Parquet; readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for key in columns:
        columns[key] = [row.get(key) for row in rows]
    table = pa.table({k: _column(v) for k, v in columns.items()}) if rows else pa.table({})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # mixed types (e.g. a knob that is a number in one trial and a list in another)
        return pa.array([None if v is None else json.dumps(v) if not isinstance(v, str) else v for v in values])


def split_report(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Separate the scalar metrics from the per-image records carried as JSON in a report."""
    scalars = {k: v for k, v in metrics.items() if k not in (PER_IMAGE_KEY, NOTES_KEY)}
    raw = metrics.get(PER_IMAGE_KEY)
    per_image = json.loads(raw) if isinstance(raw, str) and raw else []
    return scalars, per_image


class RunRecorder:
    """Appends each report of one run to ``curves.parquet`` and ``per_image.parquet`` in a folder."""

    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.curves: list[dict[str, Any]] = []
        self.per_image: list[dict[str, Any]] = []
        # continue the files of an interrupted run instead of overwriting them
        for name, rows in (("curves.parquet", self.curves), ("per_image.parquet", self.per_image)):
            path = self.output_dir / name
            if path.is_file():
                rows.extend(pq.read_table(path).to_pylist())

    def add(self, metrics: dict[str, Any]) -> None:
        scalars, per_image = split_report(metrics)
        iteration = scalars.get("iteration")
        if iteration is not None:
            # a resumed run repeats the reports after its last checkpoint: keep the newest
            self.curves = [r for r in self.curves if r.get("iteration", -1) < iteration]
            if per_image:
                self.per_image = [r for r in self.per_image if r.get("iteration", -1) < iteration]
        self.curves.append(scalars)
        self.per_image.extend(per_image)
        write_parquet_atomic(self.curves, self.output_dir / "curves.parquet")
        if per_image:
            write_parquet_atomic(self.per_image, self.output_dir / "per_image.parquet")
