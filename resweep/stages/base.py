"""The registry of stage kinds, what a producer gets, and artifact keys (torch-free, Ray-free).

``StageDefinition`` and ``parse_stage`` live in the config layer (:mod:`resweep.config_stages`,
so that a config parses a stage without importing this package) and are re-exported here;
the kinds' names in :mod:`resweep.name_tables` (``BUILTIN_STAGES``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resweep.config_stages import StageDefinition, parse_stage
from resweep.errors import ResweepError
from resweep.name_tables import BUILTIN_STAGES
from resweep.name_tables import STAGES as _STAGES
from resweep.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "BUILTIN_STAGES",
    "STAGES",
    "StageContext",
    "StageDefinition",
    "StageKind",
    "definition_digest",
    "key_from_parts",
    "parse_stage",
    "register_stage",
    "stage_key",
    "stage_kind",
]


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


# The kinds' names live in resweep.name_tables (the config checks them there); this is that table.
STAGES: Registry[StageKind] = _STAGES


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
    dependencies = {role: stage_key(dep) for role, dep in sorted(definition.dependencies().items())}
    return key_from_parts(definition, definition.identity(), dependencies)


def key_from_parts(definition: StageDefinition, identity: dict[str, Any], dependencies: dict[str, str]) -> str:
    """``stage_key`` from an identity and dependency keys computed already (by the driver, once)."""
    _require_resolved(definition)
    key_data = {
        "kind": definition.kind,
        "code_version": type(definition).code_version,
        "definition": definition.key_definition(),
        "identity": identity,
        "dependencies": dict(sorted(dependencies.items())),
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
