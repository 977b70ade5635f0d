"""Planning and producing artifacts in this process (no Ray): what ``resweep train`` uses, and
what each Ray task of :mod:`resweep.stages.on_ray` runs."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resweep.errors import ResweepError
from resweep.stages.base import (
    StageContext,
    StageDefinition,
    definition_digest,
    stage_key,
    stage_kind,
)
from resweep.stages.store import ArtifactStore, join_uri

if TYPE_CHECKING:
    import torch

    from resweep.config import ExperimentConfig

#: artifact statuses as artifacts.parquet records them
PRODUCED, REUSED, FAILED = "produced", "reused", "failed"


@dataclass
class PlannedStage:
    """One artifact to make: its key, definition, and the keys of what it reads (role -> key)."""

    key: str
    definition: StageDefinition
    dependencies: dict[str, str] = field(default_factory=dict)


@dataclass
class ArtifactRecord:
    """One row of artifacts.parquet."""

    key: str
    kind: str
    definition: str  # JSON
    status: str
    seconds: float
    time: float  # when it was produced (for reused ones: when it had been produced)
    uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    notes: str | None = None  # the producer's caveats, "; "-joined

    def row(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "metrics"}
        out.update({f"metric.{k}": float(v) for k, v in self.metrics.items()})
        return out


def plan(stages: dict[str, StageDefinition]) -> tuple[list[PlannedStage], dict[str, str]]:
    """Every artifact needed for ``stages`` (dependencies first, each key once) and role -> key."""
    ordered: dict[str, PlannedStage] = {}

    def visit(definition: StageDefinition) -> str:
        deps = {role: visit(dep) for role, dep in sorted(definition.dependencies().items())}
        key = stage_key(definition)
        if key not in ordered:
            ordered[key] = PlannedStage(key, definition, deps)
        return key

    roles = {role: visit(definition) for role, definition in sorted(stages.items())}
    return list(ordered.values()), roles


def produce(
    planned: PlannedStage,
    storage: str,
    *,
    scratch: Path | None = None,
    device: torch.device | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> ArtifactRecord:
    """Make ``planned`` in ``storage`` unless it is committed there already (dependencies must be)."""
    store = ArtifactStore(storage)
    definition = planned.definition
    definition_json = json.dumps(definition.model_dump(mode="json"), sort_keys=True)

    def record(status: str, marker: dict[str, Any], seconds: float) -> ArtifactRecord:
        return ArtifactRecord(
            planned.key, definition.kind, definition_json, status, seconds,
            float(marker.get("committed_at", time.time())), store.uri(planned.key),
            dict(marker.get("metrics") or {}), notes="; ".join(marker.get("notes") or []) or None,
        )

    done = store.committed(planned.key)
    if done is not None:
        return record(REUSED, done.marker, 0.0)
    scratch = Path(scratch or tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    with store.lock(planned.key):
        done = store.committed(planned.key)
        if done is not None:
            return record(REUSED, done.marker, 0.0)
        inputs = {role: store.fetch(key, scratch) for role, key in planned.dependencies.items()}
        log(f"stages: producing {planned.key} ({definition.kind}) -> {store.uri(planned.key)}")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=scratch, prefix=f".produce-{planned.key}-") as tmp:
            context = StageContext(log=log, device=device, artifacts=inputs, progress=progress)
            metrics = _produce_with_own_rng(definition, Path(tmp), context)
            seconds = time.perf_counter() - start
            committed = store.commit(
                planned.key,
                Path(tmp),
                {"key": planned.key, "kind": definition.kind, "metrics": metrics, "seconds": seconds,
                 "notes": list(dict.fromkeys(context.notes))},
                {"key": planned.key, "kind": definition.kind, "definition": definition.model_dump(mode="json"),
                 "identity": definition.identity(), "dependencies": planned.dependencies},
            )
        log(f"stages: {planned.key} done in {seconds:.1f} s")
        return record(PRODUCED, committed.marker, seconds)


def _produce_with_own_rng(definition: StageDefinition, out: Path, context: StageContext) -> dict[str, float]:
    """Run the producer on a forked RNG: the caller (a run that found the artifact missing)
    continues exactly as one that found it made."""
    import torch

    devices = [context.device] if context.device is not None and context.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return stage_kind(definition.kind).produce(definition, out, context)


def artifact_uris(storage: str, roles: dict[str, str]) -> dict[str, str]:
    """role -> URI of the artifact folder (what a trial is given)."""
    return {role: join_uri(storage, "artifacts", key) for role, key in roles.items()}


def fetch_artifacts(uris: dict[str, str], scratch: Path) -> dict[str, Path]:
    """role -> local folder of each committed artifact (downloaded into ``scratch`` when remote)."""
    out: dict[str, Path] = {}
    for role, uri in uris.items():
        storage, key = split_artifact_uri(uri)
        try:
            out[role] = ArtifactStore(storage).fetch(key, Path(scratch))
        except FileNotFoundError as exc:
            raise ResweepError(f"artifact of role '{role}': {exc}") from None
    return out


def split_artifact_uri(uri: str) -> tuple[str, str]:
    """``<storage>/artifacts/<key>`` -> (storage, key), keeping a URI's query."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in uri:
        path = Path(uri)
        return str(path.parent.parent), path.name
    s = urlsplit(uri)
    parts = s.path.rstrip("/").split("/")
    return urlunsplit((s.scheme, s.netloc, "/".join(parts[:-2]), s.query, s.fragment)), parts[-1]


def prepare_local(
    experiment: ExperimentConfig,
    storage: str | Path,
    *,
    scratch: Path | None = None,
    device: torch.device | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Path], list[ArtifactRecord]]:
    """Make (or reuse) every stage ``experiment`` declares, in this process; role -> local folder."""
    planned, roles = plan(experiment.stages())
    records = [produce(p, str(storage), scratch=scratch, device=device, log=log) for p in planned]
    return fetch_artifacts(artifact_uris(str(storage), roles), Path(scratch or tempfile.gettempdir())), records


def trial_artifact_keys(
    experiment: ExperimentConfig,
    storage: str,
    prepared: dict[str, str],
    scratch: Path,
    *,
    device: torch.device | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """In a trial: role -> key of each stage ``experiment`` declares.

    ``prepared`` (definition digest -> key) is what the driver made before the trials started.
    A stage it could not foresee (a search space that changes a stage's definition, sampled by
    Optuna at run time) is made here, in the same store, with the same commit protocol.
    """
    keys: dict[str, str] = {}
    for role, definition in sorted(experiment.stages().items()):
        digest = definition_digest(definition)
        if digest in prepared:
            keys[role] = prepared[digest]
            continue
        planned, roles = plan({role: definition})
        for step in planned:
            produce(step, storage, scratch=scratch, device=device, log=log)
        keys[role] = roles[role]
    return keys
