"""What a trial runs, resolved once on the driver, and the study settings every trial shares.

A :class:`TrialSpec` travels to the trial inside the Ray Tune config (key ``"trial"``, as
:meth:`TrialSpec.to_payload`): grid and random studies put the list of specs in the param
space, Optuna studies get them from :class:`~resweep.study.seed_groups.SeedGroupSearcher`.
The trial process does not rebuild the configuration: it validates ``experiment`` and runs it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: key of the trial spec in a Ray Tune trial config
TRIAL_KEY = "trial"


@dataclass(frozen=True)
class TrialSpec:
    label: str
    """variant label ("" without variants)"""
    seed: int
    """``train.seed`` of this trial"""
    params: dict[str, Any]
    """the trial's own overrides of the base config (dotted paths: searched knobs, variant)"""
    experiment: dict[str, Any]
    """the full, validated experiment config (``ExperimentConfig.to_dict()``)"""
    group: str = ""
    """trials that differ only by seed share a group (Optuna: one Optuna trial)"""
    stage_keys: dict[str, str] = field(default_factory=dict)
    """definition digest -> artifact key of the stages this trial reads, computed by the driver
    (a trial never computes a key from its node's files; see resweep.stages.study_keys)"""

    def to_payload(self) -> dict[str, Any]:
        """Plain JSON-able data for the Tune config (Tune writes it to params.json)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TrialSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(payload) - names
        if unknown:
            raise ValueError(f"unknown trial spec fields: {sorted(unknown)}")
        return cls(**payload)

    @classmethod
    def from_tune_config(cls, config: dict[str, Any]) -> TrialSpec:
        return cls.from_payload(config[TRIAL_KEY])

    @property
    def iterations(self) -> int:
        return int(self.experiment.get("train", {}).get("iterations") or 0)

    def describe(self) -> str:
        """Short human label: variant or knob values, and the seed."""
        if self.label:
            text = self.label
        elif self.params:
            text = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in self.params.items())
        else:
            text = "base"
        return f"{text} s{self.seed}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


@dataclass(frozen=True)
class TrialSettings:
    """Resources and places shared by every trial of a study (shipped with
    ``tune.with_parameters``)."""

    workers: int = 1
    in_process: bool = True
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    custom_resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources of each worker (``resources.custom_resources``)"""
    max_failures: int = 1
    train_storage: str = ""
    """where multi-worker trials' Ray Train runs keep their checkpoints"""
    cache_dir: str | None = None
    image_root: str | None = None
    """``<study>/images``: each trial saves its final outputs in ``<image_root>/<trial_id>``"""
    study_dir: str | None = None
    """the study folder: each trial logs to ``trials/<trial_id>/log.txt`` there"""
    storage: str = ""
    """the study's storage root (local path or ``s3://...``): artifacts live in ``<storage>/artifacts``"""
    artifact_keys: dict[str, str] = field(default_factory=dict)
    """stage definition digest -> key of the artifacts the driver made (see resweep.stages)"""
    relay: str = ""
    """name of the study's relay actor: trials send their log lines, error summary and saved
    images to the driver through it, which writes them into the study folder (on a cluster
    the trial's node does not see that folder); "" writes them from the trial itself"""

    def image_dir(self, trial_id: str) -> Path | None:
        return Path(self.image_root) / trial_id if self.image_root else None

    @property
    def uses_torch_trainer(self) -> bool:
        return not (self.workers == 1 and self.in_process)
