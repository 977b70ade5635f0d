"""The base of every method's knobs; torch-free so that configs validate without importing torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig
    from resweep.stages import StageDefinition


class MethodConfig(BaseModel):
    """Knobs of one method. ``enabled: false`` keeps the settings but switches it off."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = True

    def check_experiment(self, experiment: ExperimentConfig) -> None:
        """Refuse knobs that do not fit the rest of the run (e.g. a loss made for another task
        kind): raise ``ValueError`` naming the knob. Called for enabled methods whenever an
        experiment config is validated, so a bad combination fails at config time."""

    def stages(self, experiment: ExperimentConfig) -> dict[str, StageDefinition]:
        """Artifacts this method needs made before training (role -> definition); see
        :mod:`resweep.stages`. The run reads each one from ``MethodContext.artifact_dir(role)``."""
        return {}
