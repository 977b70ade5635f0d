"""Planning and producing artifacts in this process (no Ray): what ``resweep train`` uses, and
what each Ray task of :mod:`resweep.stages.on_ray` runs."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resweep.errors import ResweepError
from resweep.stages.base import (
    StageContext,
    StageDefinition,
    definition_digest,
    key_from_parts,
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
    #: the data identity the key was computed from (None: the key was computed before, by the
    #: study's driver, and is not recomputed here)
    identity: dict[str, Any] | None = None
    digest: str = ""  # definition_digest(definition)


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


def plan(
    stages: dict[str, StageDefinition], known: Mapping[str, str] | None = None, *, compute: bool = True
) -> tuple[list[PlannedStage], dict[str, str]]:
    """Every artifact needed for ``stages`` (dependencies first, each key once) and role -> key.

    ``known`` (definition digest -> key): keys computed before, by the study's driver; a
    definition found there keeps its key and its data identity is not read again. With
    ``compute=False`` (in a trial) a definition not found there is an error: a trial never
    computes a key from its own node's files (their mtimes may differ from the driver's).
    """
    ordered: dict[str, PlannedStage] = {}
    known = known or {}

    def visit(definition: StageDefinition) -> str:
        deps = {role: visit(dep) for role, dep in sorted(definition.dependencies().items())}
        digest = definition_digest(definition)
        identity = None
        if digest in known:
            key = known[digest]
        elif compute:
            identity = definition.identity()
            key = key_from_parts(definition, identity, deps)
        else:
            raise ResweepError(
                f"no key for this trial's '{definition.kind}' stage: the study's driver computes every "
                "stage key (resume the study with the resweep version that started it)"
            )
        if key not in ordered:
            ordered[key] = PlannedStage(key, definition, deps, identity, digest)
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
    origin: dict[str, str] | None = None,
) -> ArtifactRecord:
    """Make ``planned`` in ``storage`` unless it is committed there already (dependencies must be).

    ``origin`` (e.g. the study and trial that made it inside a trial) goes into the commit
    marker as ``made_by``: the study's driver reads it to record the artifact.
    """
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
        inputs = {role: store.fetch(key) for role, key in planned.dependencies.items()}
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
                 "notes": list(dict.fromkeys(context.notes)), **({"made_by": origin} if origin else {})},
                # identity None: the key came from the study's driver (saved with the study)
                {"key": planned.key, "kind": definition.kind, "definition": definition.model_dump(mode="json"),
                 "identity": planned.identity, "dependencies": planned.dependencies},
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


def fetch_artifacts(uris: dict[str, str], cache: Path | None = None) -> dict[str, Path]:
    """role -> local folder of each committed artifact (downloaded into this node's artifact
    cache, ``cache`` or :func:`~resweep.stages.scratch.node_cache`, when remote)."""
    out: dict[str, Path] = {}
    for role, uri in uris.items():
        storage, key = split_artifact_uri(uri)
        try:
            out[role] = ArtifactStore(storage).fetch(key, cache)
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
    return fetch_artifacts(artifact_uris(str(storage), roles)), records


def trial_artifact_keys(
    experiment: ExperimentConfig,
    storage: str,
    prepared: Mapping[str, str],
    scratch: Path,
    *,
    device: torch.device | None = None,
    log: Callable[[str], None] = print,
    origin: dict[str, str] | None = None,
    make: Callable[[PlannedStage], ArtifactRecord] | None = None,
) -> dict[str, str]:
    """In a trial: role -> key of each stage ``experiment`` declares.

    ``prepared`` (definition digest -> key, dependencies included) was computed by the study's
    driver, for the stages it made before the trials started and for those of each sampled
    trial (saved with the study): the trial never computes a key itself. A stage not committed
    yet (a search space that changes a stage's definition, sampled by Optuna at run time) is
    made here, in the same store with the same commit protocol, on ``device`` (the trial's),
    or by ``make`` (e.g. a Ray task with a training worker's resources); ``origin`` goes into
    its commit marker, where the driver reads it to record the artifact.
    """
    planned, roles = plan(experiment.stages(), prepared, compute=False)
    store = ArtifactStore(storage)
    for step in planned:
        if store.committed(step.key) is not None:
            continue
        if make is not None:
            make(step)
        else:
            produce(step, storage, scratch=scratch, device=device, log=log, origin=origin)
    return roles
