"""A study's artifact keys: computed once, on the driver, and saved with the study.

The key of an artifact hashes the identity of the data it reads (file names, sizes, mtimes).
Nodes holding copies of the data may see other mtimes, and a resumed driver may find files
touched since the run started: a key computed again there would be a new artifact, trained
again. So the driver computes each stage's key once and saves it in
``<study>/stage_keys.json`` (definition digest -> key, and the identity it came from); a
resume reuses what is saved, and every trial is given the keys of its stages (its
``TrialSpec.stage_keys``, filled by the driver when it resolves the trial, Optuna's sampled
stages included), so a trial never reads its node's files to name an artifact.

Ray-free and torch-free (the driver's side of :mod:`resweep.stages.produce`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from resweep.stages.produce import PlannedStage, plan

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig
    from resweep.config_stages import StageDefinition

_Spec = TypeVar("_Spec")  # resweep.study.trial_spec.TrialSpec: a layer above, so not named here

VERSION = 1


class StudyStageKeys:
    """definition digest -> key of every stage a study has planned, kept in one JSON file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.keys: dict[str, str] = {}
        self.identities: dict[str, Any] = {}  # key -> the data identity its key hashed
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            self.keys = dict(data.get("keys") or {})
            self.identities = dict(data.get("identities") or {})

    def plan(self, stages: dict[str, StageDefinition]) -> tuple[list[PlannedStage], dict[str, str]]:
        """:func:`~resweep.stages.produce.plan` with the saved keys; new ones are computed here
        (on the driver) and saved."""
        planned, roles = plan(stages, self.keys)
        new = [p for p in planned if p.digest not in self.keys]
        for step in planned:
            if step.identity is None:  # saved: what the key was computed from, for definition.json
                step.identity = self.identities.get(step.key)
        if new:
            for step in new:
                self.keys[step.digest] = step.key
                self.identities[step.key] = step.identity
            self._save()
        return planned, roles

    def keys_for(self, experiment: ExperimentConfig) -> dict[str, str]:
        """definition digest -> key of every stage ``experiment`` reads, dependencies included."""
        planned, _ = self.plan(experiment.stages())
        return {p.digest: p.key for p in planned}

    def attach(self, spec: _Spec) -> _Spec:
        """``spec`` (a study's TrialSpec, a dataclass with ``experiment`` and ``stage_keys``) with the keys of its stages (what the trial is given instead of computing them)."""
        import dataclasses

        from resweep.config import ExperimentConfig

        keys = self.keys_for(ExperimentConfig.from_dict(spec.experiment, source="<trial spec>"))
        return dataclasses.replace(spec, stage_keys=keys) if keys else spec

    def _save(self) -> None:
        from resweep.fileio import write_text_atomic

        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": VERSION, "keys": dict(sorted(self.keys.items())),
                "identities": dict(sorted(self.identities.items()))}
        write_text_atomic(self.path, json.dumps(data, indent=1, default=str))


# The study whose driver runs in this process: the Optuna resolver (restored by Ray Tune from
# its own checkpoint, so holding no path) gives each sampled trial its keys from it.
_ACTIVE: StudyStageKeys | None = None


def activate(keys: StudyStageKeys | None) -> None:
    global _ACTIVE
    _ACTIVE = keys


def active() -> StudyStageKeys | None:
    return _ACTIVE
