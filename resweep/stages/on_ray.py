"""The study driver's side of stages: make every artifact the study's trials need, each as its
own Ray task, before the Tuner starts; record them in ``artifacts.parquet``.

This is the one module of :mod:`resweep.stages` that imports Ray (inside functions only).
A ``train`` stage runs as one Ray task with one training worker's resources (its own
``resources``: CPUs and a GPU when the study's workers have one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resweep.errors import ResweepError
from resweep.stages.base import definition_digest
from resweep.stages.produce import FAILED, PRODUCED, ArtifactRecord, PlannedStage, plan, produce
from resweep.study.layout import ARTIFACTS_FILE

#: how often Ray reruns a stage task whose node or worker process died
STAGE_TASK_RETRIES = 3

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig
    from resweep.stages.study_keys import StudyStageKeys



@dataclass
class PreparedStages:
    """What trials are given: the storage and definition digest -> artifact key (of every
    stage made here, dependencies included)."""

    storage: str
    keys: dict[str, str] = field(default_factory=dict)
    records: list[ArtifactRecord] = field(default_factory=list)

    def roles_for(self, experiment: ExperimentConfig) -> dict[str, str]:
        """role -> key of the artifacts a trial of ``experiment`` reads (those made here)."""
        out = {}
        for role, definition in experiment.stages().items():
            digest = definition_digest(definition)
            if digest in self.keys:
                out[role] = self.keys[digest]
        return out


def _produce_task(
    planned: PlannedStage, storage: str, use_gpu: bool, origin: dict[str, str] | None = None
) -> ArtifactRecord:
    import tempfile

    import torch

    device = torch.device("cuda", 0) if use_gpu and torch.cuda.is_available() else torch.device("cpu")
    # a scratch folder of this task's own, on whichever node Ray placed it
    with tempfile.TemporaryDirectory(prefix="resweep-stage-") as scratch:
        return produce(planned, storage, scratch=Path(scratch), device=device, progress=False, origin=origin)


def produce_as_task(
    planned: PlannedStage, storage: str, *, cpus: float, gpus: float, origin: dict[str, str] | None = None
) -> ArtifactRecord:
    """Make one artifact in a Ray task with one training worker's resources and wait for it:
    what a multi-worker trial (whose own process holds no GPU) does for a stage it makes."""
    import ray

    remote = ray.remote(_produce_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=STAGE_TASK_RETRIES)
    return ray.get(remote.remote(planned, storage, gpus > 0, origin))


def prepare_stages(
    experiments: Iterable[ExperimentConfig],
    storage: str,
    study_dir: Path,
    *,
    cpus: float = 1,
    gpus: float = 0,
    log: Callable[[str], None] = print,
    keys: StudyStageKeys | None = None,
) -> PreparedStages:
    """Make every artifact ``experiments`` declare (each key once; dependencies first; those
    independent of each other in parallel Ray tasks) and write ``artifacts.parquet``.
    ``keys``: the study's saved keys (reused, new ones saved; see :mod:`resweep.stages.study_keys`)."""
    import ray

    planned: dict[str, PlannedStage] = {}
    prepared = PreparedStages(storage)
    for experiment in experiments:
        steps, _ = keys.plan(experiment.stages()) if keys is not None else plan(experiment.stages())
        for step in steps:
            planned.setdefault(step.key, step)
            prepared.keys[step.digest] = step.key
    if not planned:
        return prepared
    # retried when its node dies (a spot worker reclaimed mid-teacher): the commit protocol makes a
    # second attempt safe; an exception raised by the producer itself is not retried
    remote = ray.remote(_produce_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=STAGE_TASK_RETRIES)
    done: dict[str, ArtifactRecord] = {}
    waiting = dict(planned)
    log(f"stages: {len(planned)} artifact(s) for this study: {', '.join(planned)}")
    while waiting:
        ready = [p for p in waiting.values() if all(k in done for k in p.dependencies.values())]
        start = time.time()
        futures = {p.key: remote.remote(p, storage, gpus > 0) for p in ready}
        failures = []
        for key, future in _as_completed(futures, start, log):
            try:
                done[key] = ray.get(future)
            except Exception as exc:  # noqa: BLE001 - recorded, then raised with every failure named
                step = waiting[key]
                done[key] = ArtifactRecord(
                    key, step.definition.kind, json.dumps(step.definition.model_dump(mode="json")), FAILED,
                    time.time() - start, time.time(), "", error=_short(exc),
                )
                failures.append(key)
            waiting.pop(key)
            record = done[key]
            log(f"stages: {key}: {record.status}" + (f" in {record.seconds:.1f} s" if record.status == PRODUCED else ""))
        if failures:
            prepared.records = list(done.values())
            write_artifacts_table(study_dir, prepared.records)
            errors = "; ".join(f"{k}: {done[k].error}" for k in failures)
            raise ResweepError(f"could not make the study's artifact(s): {errors}")
    prepared.records = list(done.values())
    write_artifacts_table(study_dir, prepared.records)
    return prepared


def _as_completed(
    futures: dict[str, Any], start: float, log: Callable[[str], None], heartbeat_s: float = 30.0
) -> Iterable[tuple[str, Any]]:
    """``(key, future)`` as each finishes, logging which are still running every ``heartbeat_s``
    (a stage can take many minutes: the user sees that it is alive, not a silent driver)."""
    import ray

    pending = dict(futures)
    while pending:
        ready, _ = ray.wait(list(pending.values()), num_returns=1, timeout=heartbeat_s)
        if not ready:
            minutes = (time.time() - start) / 60
            log(f"stages: {len(pending)} running for {minutes:.1f} min: {', '.join(pending)}")
            continue
        key = next(k for k, f in pending.items() if f == ready[0])
        yield key, pending.pop(key)


def _short(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {cause}"


def write_artifacts_table(study_dir: Path, records: list[ArtifactRecord]) -> None:
    """Merge ``records`` into ``<study_dir>/artifacts.parquet`` (one row per key). A key made by
    this study stays 'produced' when a resume finds it committed."""
    import pyarrow.parquet as pq

    from resweep.engine.records import write_parquet_atomic

    path = Path(study_dir) / ARTIFACTS_FILE
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        rows = {r["key"]: r for r in pq.read_table(path).to_pylist()}
    for record in records:
        old = rows.get(record.key)
        if old is not None and old.get("status") == PRODUCED and record.status != FAILED:
            continue
        rows[record.key] = record.row()
    write_parquet_atomic(list(rows.values()), path)
