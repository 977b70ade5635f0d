"""What defines a shared artifact: ``StageDefinition`` (each stage kind subclasses it) and
``parse_stage``. Torch-free and in the config layer, so that a config (``model.init_from``, a
method's ``stages``) parses a stage without importing :mod:`resweep.stages`: the kind's class
is found by name in :mod:`resweep.name_tables` (``BUILTIN_STAGES``). Also importable from
``resweep.stages``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from resweep.errors import RegistryError
from resweep.name_tables import STAGES

__all__ = ["TRIAL_SEED", "StageDefinition", "parse_stage"]

#: a stage's ``seed: trial``: the seed of the trial (run) that reads the artifact
TRIAL_SEED = "trial"


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


def parse_stage(data: Any, *, field: str = "stage") -> StageDefinition:
    """A stage definition from a mapping with a ``kind`` (or a definition already); the
    kind's module is imported through ``name_tables.STAGES`` on first use."""
    if isinstance(data, StageDefinition):
        return data
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"{field}: a stage definition is a mapping with a 'kind' ({', '.join(STAGES.names())})")
    try:
        entry = STAGES.get(str(data["kind"]))
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
