"""The study's own results, written by the platform (not left in Ray's folders).

Files in the study folder (schema in docs/results-schema.md):

- ``trials.parquet``: one row per trial: id, label, seed, status, error, every config value
  (``config.<path>``), the searched knobs (``param.<path>``), final and best metrics
  (``final.<metric>``, ``best.<metric>``), iterations, time.
- ``curves.parquet``: every report of every trial (``trial_id`` + the reported scalars).
- ``per_image.parquet``: per-image metrics of every evaluation (``trial_id``, ``iteration``,
  ``set``, ``image``, metrics and their baselines).
- ``study.json``: what the analysis needs to know about the study (knobs, objectives,
  baseline, paper reference).

Each file is rewritten atomically, so a reader (``resweep status``, a report) never sees a
partial file and a killed driver loses at most the reports since the last write.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from resweep.engine.records import split_report, write_parquet_atomic
from resweep.metrics.directions import metric_direction

TRIALS_FILE = "trials.parquet"
CURVES_FILE = "curves.parquet"
PER_IMAGE_FILE = "per_image.parquet"
META_FILE = "study.json"

# trial statuses in trials.parquet
PENDING, RUNNING, FINISHED, DIVERGED, PRUNED, ERRORED = (
    "pending", "running", "finished", "diverged", "pruned", "errored"
)


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
    """Direction in which a metric improves: the objective's mode, else the table's."""
    return metric_direction(metric, mode)


class StudyResults:
    def __init__(self, study_dir: str | Path, meta: dict[str, Any] | None = None):
        self.dir = Path(study_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta or {}
        self.trials: dict[str, dict[str, Any]] = {}
        self.curves: list[dict[str, Any]] = []
        self.per_image: list[dict[str, Any]] = []
        self._dirty = False
        self._last_flush = 0.0
        self.load()

    # ------------------------------------------------------------------ disk
    def load(self) -> None:
        self.trials, self.curves, self.per_image = {}, [], []
        if (self.dir / TRIALS_FILE).is_file():
            for row in pq.read_table(self.dir / TRIALS_FILE).to_pylist():
                self.trials[row["trial_id"]] = row
        if (self.dir / CURVES_FILE).is_file():
            self.curves = pq.read_table(self.dir / CURVES_FILE).to_pylist()
        if (self.dir / PER_IMAGE_FILE).is_file():
            self.per_image = pq.read_table(self.dir / PER_IMAGE_FILE).to_pylist()
        if (self.dir / META_FILE).is_file() and not self.meta:
            self.meta = json.loads((self.dir / META_FILE).read_text())

    def write_meta(self) -> None:
        tmp = self.dir / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(self.meta, indent=2, default=str))
        tmp.replace(self.dir / META_FILE)

    def flush(self, force: bool = False, min_interval_s: float = 2.0) -> None:
        if not self._dirty or (not force and time.monotonic() - self._last_flush < min_interval_s):
            return
        write_parquet_atomic(list(self.trials.values()), self.dir / TRIALS_FILE)
        write_parquet_atomic(self.curves, self.dir / CURVES_FILE)
        write_parquet_atomic(self.per_image, self.dir / PER_IMAGE_FILE)
        self._dirty = False
        self._last_flush = time.monotonic()

    # ------------------------------------------------------------------ events
    def trial_started(
        self, trial_id: str, label: str, seed: int, params: dict[str, Any], experiment: dict[str, Any]
    ) -> None:
        row = self.trials.get(trial_id)
        if row is not None and row.get("status") in (FINISHED, DIVERGED, PRUNED):
            return  # a restored trial that already ended: keep its row
        row = {
            "trial_id": trial_id,
            "label": label,
            "seed": seed,
            "status": RUNNING,
            "error": None,
            "iterations": 0,
            "time_total_s": 0.0,
            "started_at": time.time(),
            **{f"param.{k}": _scalar(v) for k, v in params.items()},
            **{f"config.{k}": _scalar(v) for k, v in flatten(experiment).items()},
        }
        if trial_id in self.trials:  # restarted: keep what it had reported
            row = {**row, **{k: v for k, v in self.trials[trial_id].items() if k.startswith(("final.", "best."))}}
            row["iterations"] = self.trials[trial_id].get("iterations", 0)
        self.trials[trial_id] = row
        self._dirty = True

    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        scalars, per_image = split_report(result)
        iteration = scalars.get("iteration")
        curve = {"trial_id": trial_id}
        for key, value in scalars.items():
            if key in ("config", "trial_id") or isinstance(value, dict | list):
                continue
            curve[key] = value
        if iteration is not None:
            # reports repeated by a trial resumed from an earlier checkpoint replace the old ones
            self.curves = [
                r for r in self.curves
                if r["trial_id"] != trial_id or (r.get("iteration") or -1) < iteration
            ]
            if per_image:
                self.per_image = [
                    r for r in self.per_image
                    if r["trial_id"] != trial_id or (r.get("iteration") or -1) < iteration
                ]
        self.curves.append(curve)
        self.per_image.extend({"trial_id": trial_id, **r} for r in per_image)

        row = self.trials.setdefault(trial_id, {"trial_id": trial_id, "status": RUNNING})
        if iteration is not None:
            row["iterations"] = iteration
        if "time_total_s" in scalars:
            row["time_total_s"] = scalars["time_total_s"]
        objectives = {o["metric"]: o["mode"] for o in self.meta.get("objectives", [])}
        for key, value in scalars.items():
            if not (key.startswith("eval.") or key in objectives or key in ("time_per_step", "loss.total")):
                continue
            if not _is_number(value):
                continue
            row[f"final.{key}"] = value
            best_key = f"best.{key}"
            old = row.get(best_key)
            direction = better(key, objectives.get(key))
            if old is None or (value > old if direction == "max" else value < old):
                row[best_key] = value
        if scalars.get("status") == DIVERGED:
            row["status"] = DIVERGED
            row["error"] = f"loss diverged: {scalars.get('diverged_loss')}"
        self._dirty = True
        self.flush()

    def trial_completed(self, trial_id: str, last_result: dict[str, Any] | None, total_iterations: int) -> None:
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id})
        last = last_result or {}
        if last.get("status") == "diverged" or row.get("status") == DIVERGED:
            row["status"] = DIVERGED
        elif (row.get("iterations") or 0) < total_iterations:
            row["status"] = PRUNED  # stopped early by the scheduler
        else:
            row["status"] = FINISHED
        row["ended_at"] = time.time()
        self._dirty = True
        self.flush(force=True)

    def trial_errored(self, trial_id: str, message: str) -> None:
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id})
        row["status"] = ERRORED
        row["error"] = message[-4000:]
        row["ended_at"] = time.time()
        self._dirty = True
        self.flush(force=True)

    # ------------------------------------------------------------------ queries
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((PENDING, RUNNING, FINISHED, DIVERGED, PRUNED, ERRORED), 0)
        for row in self.trials.values():
            counts[row.get("status", RUNNING)] = counts.get(row.get("status", RUNNING), 0) + 1
        return counts

    def best(self, metric: str, mode: str) -> dict[str, Any] | None:
        key = f"best.{metric}"
        rows = [r for r in self.trials.values() if _is_number(r.get(key)) and r.get("status") != DIVERGED]
        if not rows:
            return None
        return (max if mode == "max" else min)(rows, key=lambda r: r[key])
