"""The study's own results, written by the driver (not left in Ray's folders).

Files (names in :mod:`resweep.study.layout`, schema in docs/results-schema.md):

- ``trials.parquet/``: one row per trial;
- ``curves.parquet/``: every report of every trial;
- ``per_image.parquet/``: per-image metrics of every evaluation of every trial;
- ``study.json``: what the analysis needs to know about the study.

Each of the three datasets is a folder of parts (:mod:`resweep.study.parts`): a running
trial's rows in its own part, ended trials' rows in chunks. A flush rewrites only the parts
of the trials that changed since the last one, each part atomically: a reader never sees a
partial file and a killed driver loses at most the reports since the last flush. Read the
folders as one dataset with :func:`resweep.study.layout.read_parquet`.

No torch, no Ray: ``resweep status`` uses the queries at the bottom.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resweep.engine.records import NOTES_KEY, split_report
from resweep.fileio import write_text_atomic
from resweep.status import ENDED, Status
from resweep.study.layout import (
    CURVES_FILE,
    PER_IMAGE_FILE,
    TRIALS_FILE,
    StudyLayout,
    parquet_exists,
    read_parquet,
)
from resweep.study.parts import (
    adopt_single_file,
    compact,
    next_chunk,
    recover_single_file,
    remove,
    write_chunk,
)
from resweep.study.table_rows import _is_number, _scalar, better, flatten, rows_to_table, write_rows

# the error of a trial lost with a stopped driver (see StudyResults.mark_lost)
LOST_TRIAL_ERROR = (
    "lost with the driver: the study stopped after this trial started and before Tune recorded "
    "it, so the resumed study could not continue it (a searcher draws such a configuration again)"
)
DATASETS = (TRIALS_FILE, CURVES_FILE, PER_IMAGE_FILE)
CHUNK_TRIALS = 256  # ended trials gathered into one chunk (their own parts then removed)
_ENDED = frozenset(s.value for s in ENDED)


@dataclass
class _Trial:
    """What the driver holds of one trial: its row, reports and per-image rows."""

    row: dict[str, Any]
    curves: list[dict[str, Any]] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return str(self.row.get("status")) in _ENDED

    def rows(self, dataset: str) -> list[dict[str, Any]]:
        return [self.row] if dataset == TRIALS_FILE else self.curves if dataset == CURVES_FILE else self.per_image


class StudyResults:
    """The study's datasets as the driver writes them (see :mod:`resweep.study.parts`).

    In memory: the trials not ended (``live``) and the ended ones whose rows wait to be moved
    into a chunk (at most :data:`CHUNK_TRIALS`); of every other trial only its status and best
    objective values, for the counts and the best trial. Nothing per event grows with the
    number of trials the study already holds."""

    def __init__(self, study_dir: str | Path, meta: dict[str, Any] | None = None):
        self.layout = StudyLayout(Path(study_dir))
        self.dir = self.layout.root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta or {}
        self._live: dict[str, _Trial] = {}
        self._pending: dict[str, _Trial] = {}  # ended, own parts written, not yet in a chunk
        self._ended: dict[str, tuple[str, dict[str, float]]] = {}  # status, best.<objective>
        self._ended_counts: dict[str, int] = {}
        self._best_cache: dict[tuple[str, str], tuple[float, str] | None] = {}
        self._dirty_rows: set[str] = set()
        self._dirty_parts: set[str] = set()
        self._last_flush = 0.0
        self.load()

    @property
    def trials(self) -> dict[str, dict[str, Any]]:
        """Rows the driver holds (running trials and recently ended ones), by trial id."""
        return {tid: t.row for tid, t in (*self._pending.items(), *self._live.items())}

    # ------------------------------------------------------------------ disk
    def load(self) -> None:
        self._live, self._pending, self._ended, self._ended_counts = {}, {}, {}, {}
        self._best_cache = {}
        for name in DATASETS:
            recover_single_file(self.dir / name)
            adopt_single_file(self.dir / name)  # a study written before parts existed
        if self.layout.meta.is_file() and not self.meta:
            self.meta = json.loads(self.layout.meta.read_text())
        keys = ["status", *(f"best.{m}" for m in self._objectives())]
        open_ids = set()
        if parquet_exists(self.layout.trials):
            for row in read_parquet(self.layout.trials, columns=keys).to_pylist():
                tid = str(row["trial_id"])
                if str(row.get("status")) in _ENDED:
                    self._add_ended(tid, row)
                else:
                    open_ids.add(tid)
        for tid, trial in self._read_trials(open_ids).items():
            self._live[tid] = trial

    def _objectives(self) -> dict[str, str]:
        return {o["metric"]: o.get("mode") or "max" for o in self.meta.get("objectives", [])}

    def _read_trials(self, ids: set[str]) -> dict[str, _Trial]:
        """Rows of these trials from disk (a trial resumed after its rows left memory)."""
        if not ids:
            return {}
        out = {tid: _Trial(row={"trial_id": tid}) for tid in ids}
        for name in DATASETS:
            path = self.dir / name
            if not parquet_exists(path):
                continue
            for row in read_parquet(path, trial_ids=ids).to_pylist():
                row = {k: v for k, v in row.items() if v is not None or name == TRIALS_FILE}
                trial = out[str(row["trial_id"])]
                if name == TRIALS_FILE:
                    trial.row = {k: v for k, v in row.items() if v is not None or k in ("error", "ended_at")}
                else:
                    trial.rows(name).append(row)
        for trial in out.values():
            for rows in (trial.curves, trial.per_image):
                rows.sort(key=lambda r: r.get("iteration") or -1)
        return out

    def write_meta(self) -> None:
        write_text_atomic(self.layout.meta, json.dumps(self.meta, indent=2, default=str))

    def flush(self, force: bool = False, min_interval_s: float = 2.0) -> None:
        if not (self._dirty_rows or self._dirty_parts):
            return
        if not force and time.monotonic() - self._last_flush < min_interval_s:
            return
        for tid in sorted(self._dirty_rows | self._dirty_parts):
            trial = self._live.get(tid) or self._pending[tid]
            names = [TRIALS_FILE] if tid in self._dirty_rows else []
            names += [CURVES_FILE, PER_IMAGE_FILE] if tid in self._dirty_parts else []
            for name in names:
                rows = trial.rows(name)
                if rows:
                    write_rows(rows, self.layout.part(name, tid))
            if trial.ended and tid in self._live:
                self._pending[tid] = self._live.pop(tid)
                self._add_ended(tid, trial.row)
        self._dirty_rows.clear()
        self._dirty_parts.clear()
        self._last_flush = time.monotonic()
        if len(self._pending) >= CHUNK_TRIALS:
            self._move_pending_to_chunks()

    def _move_pending_to_chunks(self) -> None:
        """Ended trials' own parts -> one chunk per dataset (written once: constant per trial)."""
        if not self._pending:
            return
        for name in DATASETS:
            folder = self.dir / name
            rows = [r for t in self._pending.values() for r in t.rows(name)]
            if rows:
                write_chunk(folder, rows_to_table(rows), next_chunk(folder))
            remove([self.layout.part(name, tid) for tid in self._pending])
        self._pending.clear()

    def compact(self) -> None:
        """Everything written, each dataset folder merged into one chunk (end of an experiment)."""
        self.flush(force=True)
        self._move_pending_to_chunks()
        for name in DATASETS:
            compact(self.dir / name)

    # ------------------------------------------------------------------ ended trials' summary
    def _add_ended(self, tid: str, row: dict[str, Any]) -> None:
        self._drop_ended(tid)
        status = str(row.get("status"))
        bests = {k[5:]: row[k] for k in row if k.startswith("best.") and _is_number(row.get(k))}
        self._ended[tid] = (status, bests)
        self._ended_counts[status] = self._ended_counts.get(status, 0) + 1
        for (metric, mode), best in list(self._best_cache.items()):
            value = bests.get(metric)
            if value is not None and status != Status.DIVERGED.value and (
                    best is None or (value > best[0] if mode == "max" else value < best[0])):
                self._best_cache[(metric, mode)] = (value, tid)

    def _drop_ended(self, tid: str) -> None:
        old = self._ended.pop(tid, None)
        if old is not None:
            self._ended_counts[old[0]] -= 1
            self._best_cache = {k: v for k, v in self._best_cache.items() if v is None or v[1] != tid}

    def _open(self, tid: str) -> _Trial:
        """The trial's rows in memory, read back when it had left (resumed, or a late report)."""
        if tid in self._live:
            return self._live[tid]
        trial = self._pending.pop(tid, None)
        if trial is None and tid in self._ended:
            trial = self._read_trials({tid})[tid]
        if trial is None:
            trial = _Trial(row={"trial_id": tid, "status": Status.RUNNING.value})
        self._drop_ended(tid)
        self._live[tid] = trial
        return trial

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
        status = self.status(trial_id)
        if status in (Status.FINISHED, Status.DIVERGED, Status.PRUNED):
            return  # a restored trial that already ended: keep its row
        known = status is not None
        trial = self._open(trial_id)
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
        if known:  # restarted: keep what it had reported
            old = trial.row
            row = {**row, **{k: v for k, v in old.items() if k.startswith(("final.", "best."))}}
            row["iterations"] = old.get("iterations") or 0
            row["started_at"] = old.get("started_at") or row["started_at"]
        trial.row = row
        self._dirty_rows.add(trial_id)
        self.flush(force=True)

    def annotate(self, trial_id: str, **values: Any) -> None:
        """Extra columns of a trial's row (written with its next flush)."""
        self._open(trial_id).row.update(values)
        self._dirty_rows.add(trial_id)

    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        scalars, per_image = split_report(result)
        iteration = scalars.get("iteration")
        curve = {"trial_id": trial_id}
        for key, value in scalars.items():
            if key in ("config", "trial_id") or isinstance(value, dict | list):
                continue
            curve[key] = value
        trial = self._open(trial_id)
        curves, images = trial.curves, trial.per_image
        if iteration is not None:
            # reports repeated by a trial resumed from an earlier checkpoint replace the old ones
            curves[:] = [r for r in curves if (r.get("iteration") or -1) < iteration]
            if per_image:
                images[:] = [r for r in images if (r.get("iteration") or -1) < iteration]
        curves.append(curve)
        images.extend({"trial_id": trial_id, **r} for r in per_image)

        row = trial.row
        if iteration is not None:
            row["iterations"] = iteration
        if isinstance(result.get(NOTES_KEY), str):
            row[NOTES_KEY] = result[NOTES_KEY]
        if "time_total_s" in scalars:
            row["time_total_s"] = scalars["time_total_s"]
        objectives = self._objectives()
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
        self._dirty_rows.add(trial_id)
        self._dirty_parts.add(trial_id)
        self.flush()

    def trial_completed(self, trial_id: str, last_result: dict[str, Any] | None, total_iterations: int) -> str:
        """Record the end of a trial; returns its status."""
        row = self._open(trial_id).row
        last = last_result or {}
        if last.get("status") == Status.DIVERGED or row.get("status") == Status.DIVERGED:
            row["status"] = Status.DIVERGED.value
        elif (row.get("iterations") or 0) < total_iterations:
            row["status"] = Status.PRUNED.value  # stopped early by the scheduler
        else:
            row["status"] = Status.FINISHED.value
        row["ended_at"] = time.time()
        self._dirty_rows.add(trial_id)
        self.flush(force=True)
        return str(row["status"])

    def trial_errored(self, trial_id: str, message: str) -> None:
        row = self._open(trial_id).row
        row["status"] = Status.ERRORED.value
        row["error"] = message[-4000:]
        row["ended_at"] = time.time()
        self._dirty_rows.add(trial_id)
        self.flush(force=True)

    def mark_lost(self, known_trial_ids: set[str]) -> list[str]:
        """Rows of trials that never ended and that Tune no longer knows: the driver stopped
        after the trial started and before Tune's experiment checkpoint recorded it, so the
        resumed study cannot continue it. They become ``errored`` with :data:`LOST_TRIAL_ERROR`
        (kept, not deleted: their curves say how far they got). Returns their ids."""
        lost = [
            trial_id for trial_id, trial in self._live.items()
            if trial_id not in known_trial_ids and not Status(trial.row.get("status") or Status.RUNNING).ended
        ]
        for trial_id in lost:
            self.trial_errored(trial_id, LOST_TRIAL_ERROR)
        return lost

    def remove_parts(self) -> None:
        """Forget every curve and per-image part (a fresh study in a reused folder)."""
        for name in (CURVES_FILE, PER_IMAGE_FILE):
            shutil.rmtree(self.dir / name, ignore_errors=True)

    # ------------------------------------------------------------------ queries
    def status(self, trial_id: str) -> str | None:
        trial = self._live.get(trial_id) or self._pending.get(trial_id)
        if trial is not None:
            return str(trial.row.get("status"))
        ended = self._ended.get(trial_id)
        return ended[0] if ended else None

    def counts(self) -> dict[str, int]:
        counts = count_statuses(t.row for t in self._live.values())
        for status, n in self._ended_counts.items():
            counts[status] = counts.get(status, 0) + n
        return counts

    def best(self, metric: str, mode: str) -> dict[str, Any] | None:
        key = (metric, mode)
        if key not in self._best_cache:  # once per objective, then kept up to date
            self._best_cache[key] = None
            rows = [{"trial_id": tid, "status": st, f"best.{metric}": b.get(metric)}
                    for tid, (st, b) in self._ended.items()]
            found = best_trial(rows, metric, mode)
            if found is not None:
                self._best_cache[key] = (found[f"best.{metric}"], str(found["trial_id"]))
        candidates = [t.row for t in self._live.values()]
        ended = self._best_cache[key]
        if ended is not None:
            candidates.append({"trial_id": ended[1], f"best.{metric}": ended[0]})
        return best_trial(candidates, metric, mode)


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
