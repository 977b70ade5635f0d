"""The driver's record of artifacts made inside trials (stages whose definition an Optuna-sampled
knob changed, so the driver could not make them before the trials started).

The driver computed their keys itself (``TrialSpec.stage_keys``), so it knows what each trial
reads without hearing from the trial; it learns that such an artifact exists from the study
storage alone: its commit marker (``made_by`` names the study and trial that made it). Each
gets one row in ``artifacts.parquet``, like those the driver made, and each trial's
``artifacts`` column names it. Ray-free: the study callback calls this.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resweep.errors import ResweepError
from resweep.stages.produce import FAILED, PRODUCED, REUSED, ArtifactRecord, PlannedStage, plan
from resweep.stages.store import ArtifactStore
from resweep.study.layout import ARTIFACTS_FILE

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig


class InTrialArtifacts:
    """What the running trials read beyond the driver's artifacts, until each is recorded."""

    def __init__(self, storage: str, study_dir: str | Path, driver_keys: Mapping[str, str]):
        self.storage = storage
        self.study_dir = str(study_dir)
        self.driver_keys = dict(driver_keys)  # definition digest -> key, made by the driver
        self.pending: dict[str, list[PlannedStage]] = {}  # trial id -> stages not recorded yet
        self.recorded = _recorded_keys(Path(study_dir))
        self._store: ArtifactStore | None = None

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = ArtifactStore(self.storage)
        return self._store

    def trial_started(self, trial_id: str, experiment: ExperimentConfig, stage_keys: Mapping[str, str]) -> dict[str, str]:
        """role -> key of the artifacts the trial reads (what its ``artifacts`` column says)."""
        known = {**self.driver_keys, **stage_keys}
        try:
            planned, roles = plan(experiment.stages(), known, compute=False)
        except ResweepError:  # a trial of an older version's study: only what the driver made
            from resweep.stages.base import definition_digest

            return {r: known[definition_digest(d)] for r, d in experiment.stages().items()
                    if definition_digest(d) in known}
        driver_made = set(self.driver_keys.values())
        todo = [p for p in planned if p.key not in driver_made and p.key not in self.recorded]
        if todo:
            self.pending[trial_id] = todo
        return roles

    def check(self, trial_id: str) -> None:
        """Record the trial's stages whose commit marker has appeared (cheap when none pend)."""
        todo = self.pending.get(trial_id)
        if not todo:
            return
        records = []
        for step in list(todo):
            if step.key in self.recorded:
                todo.remove(step)
                continue
            done = self.store.committed(step.key)
            if done is None:
                continue
            made_by = done.marker.get("made_by") or {}
            status = PRODUCED if made_by.get("study") == self.study_dir else REUSED
            records.append(_record(step, status, self.store.uri(step.key), done.marker))
            self.recorded.add(step.key)
            todo.remove(step)
        self._write(records)

    def trial_ended(self, trial_id: str, error: str | None = None) -> None:
        """The trial ended: record what it committed; with ``error``, a stage it did not commit
        is recorded ``failed`` (another trial that makes it later turns the row to ``produced``)."""
        self.check(trial_id)
        todo = self.pending.pop(trial_id, [])
        if error is not None and todo:
            self._write([_record(step, FAILED, "", {}, error=f"in trial {trial_id}: {error}") for step in todo])

    def _write(self, records: list[ArtifactRecord]) -> None:
        if records:
            from resweep.stages.on_ray import write_artifacts_table

            write_artifacts_table(Path(self.study_dir), records)


def _record(step: PlannedStage, status: str, uri: str, marker: dict[str, Any], error: str | None = None) -> ArtifactRecord:
    definition = step.definition
    return ArtifactRecord(
        step.key, definition.kind, json.dumps(definition.model_dump(mode="json"), sort_keys=True), status,
        float(marker.get("seconds") or 0.0) if status == PRODUCED else 0.0,
        float(marker.get("committed_at", time.time())), uri, dict(marker.get("metrics") or {}),
        error=error, notes="; ".join(marker.get("notes") or []) or None,
    )


def _recorded_keys(study_dir: Path) -> set[str]:
    """Keys artifacts.parquet already holds (not failed): a resumed driver does not record them again."""
    path = study_dir / ARTIFACTS_FILE
    if not path.is_file():
        return set()
    import pyarrow.parquet as pq

    return {r["key"] for r in pq.read_table(path, columns=["key", "status"]).to_pylist() if r["status"] != FAILED}
