"""The base of every method's knobs (``methods.<name>``): ``MethodConfig``, and
``PretrainKnobs`` for a method that pretrains an encoder as a stage. Torch-free and in the
config layer, so that ``ExperimentConfig`` holds and validates them without importing a method
(the subclasses are found by name in :mod:`resweep.name_tables`). Also importable from
``resweep.methods.method_config``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from resweep.config_sections import DatasetSpec

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig
    from resweep.config_stages import StageDefinition

__all__ = ["LossPrecision", "MethodConfig", "PretrainKnobs", "check_crop_scale"]

#: the precision of a method's loss networks and distances (see ``MethodConfig.loss_precision``)
LossPrecision = Literal["fp32", "bf16"]


class MethodConfig(BaseModel):
    """Knobs of one method. ``enabled: false`` keeps the settings but switches it off."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = True
    loss_precision: LossPrecision = Field(
        "fp32",
        description="precision of this method's loss terms (its loss networks, e.g. VGG or MAE "
        "encoders, and its distances): fp32 even under train.amp (default), or bf16 autocast "
        "when train.amp is on (faster on GPU; feature distances near 0 then carry rounding "
        "noise of ~0.4% of the features)",
    )

    def check_experiment(self, experiment: ExperimentConfig) -> None:
        """Refuse knobs that do not fit the rest of the run (e.g. a loss made for another task
        kind): raise ``ValueError`` naming the knob. Called for enabled methods whenever an
        experiment config is validated, so a bad combination fails at config time."""

    def stages(self, experiment: ExperimentConfig) -> dict[str, StageDefinition]:
        """Artifacts this method needs made before training (role -> definition, built with
        ``parse_stage({"kind": ..., ...})``); see :mod:`resweep.stages`. The run reads each
        one from ``MethodContext.artifact_dir(role)``."""
        return {}


def check_crop_scale(value: tuple[float, float]) -> tuple[float, float]:
    """RandomResizedCrop's area fractions of an MAE pretraining (a method's knob or a stage's)."""
    lo, hi = value
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop_scale {list(value)}: needs 0 < low <= high <= 1 (fractions of the area)")
    return value


class PretrainKnobs(BaseModel):
    """Base of a method's pretraining knobs (an encoder made as a stage): the data it pretrains on."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    data: dict[str, Any] | None = Field(
        None, description="a dataset spec to pretrain on (default: the task's training set; a "
        "stand-in encoder: its own out-of-task default)"
    )

    @field_validator("data")
    @classmethod
    def _check_data(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return DatasetSpec.model_validate(value).model_dump(mode="json", exclude_defaults=True)

    def dataset(self, default: DatasetSpec) -> DatasetSpec:
        return default if self.data is None else DatasetSpec.model_validate(self.data)
