"""The study's own results, written by the driver (not left in Ray's folders).

Files (names in :mod:`resweep.study.layout`, schema in docs/results-schema.md):

- ``trials.parquet``: one row per trial (a single small file, rewritten atomically);
- ``curves.parquet/<trial_id>.parquet``: every report of one trial;
- ``per_image.parquet/<trial_id>.parquet``: per-image metrics of every evaluation of one trial;
- ``study.json``: what the analysis needs to know about the study.

A flush rewrites only the parts of the trials that reported since the last one (never the
whole study's curves), each part atomically: a reader never sees a partial file and a killed
driver loses at most the reports since the last flush. Read the folders as one dataset with
:func:`resweep.study.layout.read_parquet`.

No torch, no Ray: ``resweep status`` uses the queries at the bottom.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from resweep.engine.records import NOTES_KEY, split_report
from resweep.fileio import atomic_path, write_text_atomic
from resweep.metrics.directions import metric_direction
from resweep.status import ENDED, Status
from resweep.study.layout import (
    CURVES_FILE,
    PER_IMAGE_FILE,
    StudyLayout,
    parquet_exists,
    read_parquet,
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


# the error of a trial lost with a stopped driver (see StudyResults.mark_lost)
LOST_TRIAL_ERROR = (
    "lost with the driver: the study stopped after this trial started and before Tune recorded "
    "it, so the resumed study could not continue it (a searcher draws such a configuration again)"
)


class StudyResults:
    def __init__(self, study_dir: str | Path, meta: dict[str, Any] | None = None):
        self.layout = StudyLayout(Path(study_dir))
        self.dir = self.layout.root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta or {}
        self.trials: dict[str, dict[str, Any]] = {}
        self.curves: dict[str, list[dict[str, Any]]] = {}  # trial_id -> its reports
        self.per_image: dict[str, list[dict[str, Any]]] = {}
        self._dirty_trials = False
        self._dirty_parts: set[str] = set()
        self._last_flush = 0.0
        self.load()

    # ------------------------------------------------------------------ disk
    def load(self) -> None:
        self.trials, self.curves, self.per_image = {}, {}, {}
        for row in read_trials(self.dir):
            self.trials[str(row["trial_id"])] = row
        for name, store in ((CURVES_FILE, self.curves), (PER_IMAGE_FILE, self.per_image)):
            path = self.dir / name
            if not parquet_exists(path):
                continue
            for row in read_parquet(path).to_pylist():
                store.setdefault(str(row["trial_id"]), []).append(row)
            if path.is_file():  # a study written before parts existed: convert on next flush
                path.unlink()
                self._dirty_parts.update(store)
        if self.layout.meta.is_file() and not self.meta:
            self.meta = json.loads(self.layout.meta.read_text())

    def write_meta(self) -> None:
        write_text_atomic(self.layout.meta, json.dumps(self.meta, indent=2, default=str))

    def flush(self, force: bool = False, min_interval_s: float = 2.0) -> None:
        if not (self._dirty_trials or self._dirty_parts):
            return
        if not force and time.monotonic() - self._last_flush < min_interval_s:
            return
        for trial_id in sorted(self._dirty_parts):
            for name, store in ((CURVES_FILE, self.curves), (PER_IMAGE_FILE, self.per_image)):
                rows = store.get(trial_id)
                if rows:
                    write_rows(rows, self.layout.part(name, trial_id))
        if self._dirty_trials:
            write_rows(list(self.trials.values()), self.layout.trials)
        self._dirty_trials = False
        self._dirty_parts.clear()
        self._last_flush = time.monotonic()

    # ------------------------------------------------------------------ events
    def trial_started(
        self,
        trial_id: str,
        label: str,
        seed: int,
        params: dict[str, Any],
        experiment: dict[str, Any],
        *,
        group: str = "",
    ) -> None:
        row = self.trials.get(trial_id)
        if row is not None and row.get("status") in (Status.FINISHED, Status.DIVERGED, Status.PRUNED):
            return  # a restored trial that already ended: keep its row
        row = {
            "trial_id": trial_id,
            "label": label,
            "seed": seed,
            "group": group,
            "status": Status.RUNNING.value,
            "error": None,
            "iterations": 0,
            "time_total_s": 0.0,
            "started_at": time.time(),
            **{f"param.{k}": _scalar(v) for k, v in params.items()},
            **{f"config.{k}": _scalar(v) for k, v in flatten(experiment).items()},
        }
        if trial_id in self.trials:  # restarted: keep what it had reported
            old = self.trials[trial_id]
            row = {**row, **{k: v for k, v in old.items() if k.startswith(("final.", "best."))}}
            row["iterations"] = old.get("iterations", 0)
            row["started_at"] = old.get("started_at") or row["started_at"]
        self.trials[trial_id] = row
        self._dirty_trials = True
        self.flush(force=True)

    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        scalars, per_image = split_report(result)
        iteration = scalars.get("iteration")
        curve = {"trial_id": trial_id}
        for key, value in scalars.items():
            if key in ("config", "trial_id") or isinstance(value, dict | list):
                continue
            curve[key] = value
        curves = self.curves.setdefault(trial_id, [])
        images = self.per_image.setdefault(trial_id, [])
        if iteration is not None:
            # reports repeated by a trial resumed from an earlier checkpoint replace the old ones
            curves[:] = [r for r in curves if (r.get("iteration") or -1) < iteration]
            if per_image:
                images[:] = [r for r in images if (r.get("iteration") or -1) < iteration]
        curves.append(curve)
        images.extend({"trial_id": trial_id, **r} for r in per_image)

        row = self.trials.setdefault(trial_id, {"trial_id": trial_id, "status": Status.RUNNING.value})
        if iteration is not None:
            row["iterations"] = iteration
        if isinstance(result.get(NOTES_KEY), str):
            row[NOTES_KEY] = result[NOTES_KEY]
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
        if scalars.get("status") == Status.DIVERGED:
            row["status"] = Status.DIVERGED.value
            # the engine names the rule that fired (loss or evaluation) and its numbers
            row["diverged_rule"] = scalars.get("diverged_rule")
            rule = scalars.get("diverged_rule") or "loss"
            detail = scalars.get("diverged_detail") or f"loss {scalars.get('diverged_loss')}"
            row["error"] = f"diverged ({rule}): {detail}"
        self._dirty_trials = True
        self._dirty_parts.add(trial_id)
        self.flush()

    def trial_completed(self, trial_id: str, last_result: dict[str, Any] | None, total_iterations: int) -> None:
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id})
        last = last_result or {}
        if last.get("status") == Status.DIVERGED or row.get("status") == Status.DIVERGED:
            row["status"] = Status.DIVERGED.value
        elif (row.get("iterations") or 0) < total_iterations:
            row["status"] = Status.PRUNED.value  # stopped early by the scheduler
        else:
            row["status"] = Status.FINISHED.value
        row["ended_at"] = time.time()
        self._dirty_trials = True
        self.flush(force=True)

    def trial_errored(self, trial_id: str, message: str) -> None:
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id})
        row["status"] = Status.ERRORED.value
        row["error"] = message[-4000:]
        row["ended_at"] = time.time()
        self._dirty_trials = True
        self.flush(force=True)

    def mark_lost(self, known_trial_ids: set[str]) -> list[str]:
        """Rows of trials that never ended and that Tune no longer knows: the driver stopped
        after the trial started and before Tune's experiment checkpoint recorded it, so the
        resumed study cannot continue it. They become ``errored`` with :data:`LOST_TRIAL_ERROR`
        (kept, not deleted: their curves say how far they got). Returns their ids."""
        lost = [
            trial_id for trial_id, row in self.trials.items()
            if trial_id not in known_trial_ids and not Status(row.get("status") or Status.RUNNING).ended
        ]
        for trial_id in lost:
            self.trial_errored(trial_id, LOST_TRIAL_ERROR)
        return lost

    def remove_parts(self) -> None:
        """Forget every curve and per-image part (a fresh study in a reused folder)."""
        for name in (CURVES_FILE, PER_IMAGE_FILE):
            shutil.rmtree(self.dir / name, ignore_errors=True)

    # ------------------------------------------------------------------ queries
    def counts(self) -> dict[str, int]:
        return count_statuses(self.trials.values())

    def best(self, metric: str, mode: str) -> dict[str, Any] | None:
        return best_trial(self.trials.values(), metric, mode)


# --------------------------------------------------------------------------- light readers
def read_trials(study_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``trials.parquet`` (empty when the study has no trial yet)."""
    path = StudyLayout(Path(study_dir)).trials
    return read_parquet(path).to_pylist() if parquet_exists(path) else []


def count_statuses(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys((s.value for s in Status), 0)
    for row in rows:
        status = str(row.get("status") or Status.RUNNING.value)
        counts[status] = counts.get(status, 0) + 1
    return counts


def count_ended(counts: dict[str, int]) -> int:
    return sum(counts.get(s.value, 0) for s in ENDED)


def best_trial(rows: Iterable[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    key = f"best.{metric}"
    candidates = [r for r in rows if _is_number(r.get(key)) and r.get("status") != Status.DIVERGED]
    if not candidates:
        return None
    return (max if mode == "max" else min)(candidates, key=lambda r: r[key])
