"""Stage definitions, the registry of stage kinds, and artifact keys (torch-free, Ray-free)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from resweep.errors import RegistryError, ResweepError
from resweep.registry import Registry

if TYPE_CHECKING:
    import torch

#: a stage's ``seed: trial``: the seed of the trial (run) that reads the artifact
TRIAL_SEED = "trial"

#: kind -> "module:producer" of the built-in kinds, imported when a config names the kind.
#: Adding a kind: write resweep/stages/<kind>.py with ``@register_stage("<kind>", Definition)``
#: on its producer, then add ONE line here.
BUILTIN_STAGES: dict[str, str] = {
    "train": "resweep.stages.train:produce_train",
    "eco_centroids": "resweep.stages.eco_centroids:produce_eco_centroids",
    "mae_pretrain": "resweep.stages.mae_pretrain:produce_mae_pretrain",
    "mae_video_pretrain": "resweep.stages.mae_video_pretrain:produce_mae_video_pretrain",
}


class StageDefinition(BaseModel):
    """What defines an artifact. Each kind subclasses it with its own fields.

    Strict (unknown keys are errors) and YAML round-trippable. ``code_version`` is bumped by
    a kind when its producer's output changes for the same definition: it is part of the key.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    kind: str
    code_version: ClassVar[int] = 1

    def dependencies(self) -> dict[str, StageDefinition]:
        """Stages this one reads (role -> definition), made first; see ``StageContext.artifact_dir``."""
        return {}

    def identity(self) -> dict[str, Any]:
        """What the key needs beyond the definition: identity of the data or files it names
        (file names, sizes, mtimes, content hashes). Computed on the driver only."""
        return {}

    def key_definition(self) -> dict[str, Any]:
        """The part of the definition that changes the artifact (default: all of it)."""
        return self.model_dump(mode="json")

    # ------------------------------------------------------------------ seeds
    # A kind with a ``seed`` field may take ``seed: trial``: one artifact per trial seed (the
    # stage's own variance enters the study's seed spread), instead of one fixed seed shared by
    # every trial. ``ExperimentConfig.stages()`` resolves it with the run's ``train.seed``, so
    # the resolved seed is part of the definition, hence of the key: each seed's artifact is
    # made once and read only by the trials of that seed.
    @property
    def seed_is_trial(self) -> bool:
        return getattr(self, "seed", None) == TRIAL_SEED

    def with_trial_seed(self, seed: int) -> StageDefinition:
        """This definition with ``seed: trial`` replaced by ``seed`` (itself when it has a fixed seed)."""
        if not self.seed_is_trial:
            return self
        return self.model_copy(update={"seed": int(seed)})


@dataclass
class StageContext:
    """What a producer may use besides its definition."""

    log: Callable[[str], None] = print
    device: torch.device | None = None
    #: role -> local folder of each dependency's artifact
    artifacts: dict[str, Path] = field(default_factory=dict)
    progress: bool = True
    #: caveats a producer records about its artifact (e.g. "random consistency features, not the
    #: paper's setting"); kept in the commit marker and artifacts.parquet's ``notes`` column
    notes: list[str] = field(default_factory=list)

    def artifact_dir(self, role: str) -> Path:
        if role not in self.artifacts:
            known = ", ".join(sorted(self.artifacts)) or "none"
            raise ResweepError(f"stage dependency '{role}' was not made (dependencies: {known})")
        return Path(self.artifacts[role])


Producer = Callable[[Any, Path, StageContext], dict[str, float]]


@dataclass(frozen=True)
class StageKind:
    kind: str
    definition_class: type[StageDefinition]
    produce: Producer


STAGES: Registry[StageKind] = Registry("stage kind")
for _kind, _target in BUILTIN_STAGES.items():
    STAGES.register_lazy(_kind, _target)


def register_stage(kind: str, definition_class: type[StageDefinition]) -> Callable[[Producer], Producer]:
    """Decorator on ``produce(definition, out_dir, context) -> metrics``: registers kind ``kind``.

    The producer writes the artifact's files into ``out_dir`` (a fresh local folder) and
    returns the artifact's own metrics; it must not import Ray.
    """

    def decorator(produce: Producer) -> Producer:
        STAGES.register(kind)(StageKind(kind, definition_class, produce))  # type: ignore[arg-type]
        return produce

    return decorator


def stage_kind(kind: str) -> StageKind:
    """The registered kind (its module is imported on first use)."""
    return STAGES.get(kind)


def parse_stage(data: Any, *, field: str = "stage") -> StageDefinition:
    """A stage definition from a mapping with a ``kind`` (or a definition already)."""
    if isinstance(data, StageDefinition):
        return data
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"{field}: a stage definition is a mapping with a 'kind' ({', '.join(STAGES.names())})")
    try:
        entry = stage_kind(str(data["kind"]))
    except RegistryError as exc:
        raise ValueError(f"{field}.kind: {exc}") from None
    try:
        return entry.definition_class.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{field}.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ValueError(problems) from None


def _sha256_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _require_resolved(definition: StageDefinition) -> None:
    if definition.seed_is_trial:
        raise ResweepError(
            f"a '{definition.kind}' stage with seed: trial has no key until a run resolves it: "
            "take stage definitions from ExperimentConfig.stages() (it sets the run's train.seed)"
        )


def stage_key(definition: StageDefinition) -> str:
    """Content hash of what defines the artifact: kind, its code version, the definition,
    the identity of the data it names, and the keys of the stages it depends on."""
    _require_resolved(definition)
    key_data = {
        "kind": definition.kind,
        "code_version": type(definition).code_version,
        "definition": definition.key_definition(),
        "identity": definition.identity(),
        "dependencies": {role: stage_key(dep) for role, dep in sorted(definition.dependencies().items())},
    }
    return f"{definition.kind}-{_sha256_json(key_data)[:16]}"


def definition_digest(definition: StageDefinition) -> str:
    """Hash of the definition alone (no data identity): the same on every node, so a trial can
    look up the key its driver computed (identity may differ between nodes, e.g. file mtimes)."""
    _require_resolved(definition)
    data = {
        "kind": definition.kind,
        "code_version": type(definition).code_version,
        "definition": definition.key_definition(),
        "dependencies": {r: definition_digest(d) for r, d in sorted(definition.dependencies().items())},
    }
    return _sha256_json(data)[:24]
