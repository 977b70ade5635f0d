"""ECO's knobs (``methods.eco.*``) and the stages it declares; torch-free (see
:mod:`resweep.methods.eco` for the method itself)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from resweep.errors import ConfigError
from resweep.methods.method_config import MethodConfig

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig
    from resweep.config_stages import StageDefinition

CentroidDtype = Literal["uint8", "float16", "float32"]

Mode = Literal["eco", "kd", "noise_free"]
Shape = Literal["linear", "cosine", "step", "sigmoid"]
ECO_TASKS = ("sr", "realworld_sr")
_SOURCES = ("checkpoint", "run_dir", "weights", "train")


class TeacherSpec(BaseModel):
    """Where the pretrained SR network ``F_pre`` comes from: exactly one of ``checkpoint``,
    ``run_dir``, ``weights`` (+ ``model``) or ``train`` (an empty mapping counts as not given)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    checkpoint: Path | None = Field(
        None, description="a resweep checkpoint (folder with checkpoint.pt, or the file); model from its config"
    )
    run_dir: Path | None = Field(
        None, description="an output folder of `resweep train` (or one study trial's folder): its latest checkpoint"
    )
    weights: Path | None = Field(None, description="a plain weights file (state dict) of a registered model")
    model: str | None = Field(None, validate_default=True, description="registered model name (with weights)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="size overrides (with weights)")
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="an experiment config (inline mapping, or a YAML path whose content is read "
        "in) trained on first use, cached by its hash and shared by every trial",
    )
    use_ema: bool = Field(True, description="use a checkpoint's EMA weights when it has them")
    tile: int = Field(512, ge=16, description="LR tile side of the teacher pass; larger images are tiled")
    tile_overlap: int = Field(
        32, ge=0, description="overlap of neighbouring tiles; exact if ≥ 2 × the teacher's receptive radius"
    )

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        weights = info.data.get("weights")
        if weights is not None and value is None:
            raise ValueError("teacher.weights needs teacher.model (the registered architecture)")
        if weights is None and value is not None:
            raise ValueError("teacher.model goes with teacher.weights only (checkpoints store their model)")
        if value is not None:
            from resweep.models import list_models

            if value not in list_models():
                raise ValueError(f"unknown model '{value}'; known: {', '.join(list_models())}")
        return value

    @field_validator("model_kwargs")
    @classmethod
    def _check_kwargs(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if value and info.data.get("weights") is None:
            raise ValueError("teacher.model_kwargs goes with teacher.weights only")
        return value

    @field_validator("train", mode="before")
    @classmethod
    def _read_train(cls, value: Any) -> Any:
        # A path is read in: the trial's stored config then holds the teacher's config itself
        # (reproducible), and a study can override its keys by dotted path
        # (methods.eco.teacher.train.task.scale), which a path would not allow.
        if value is None:
            return {}
        if isinstance(value, (str, Path)):
            from resweep.config import read_yaml

            try:
                return read_yaml(value)
            except ConfigError as exc:
                raise ValueError(f"teacher training config: {exc.message}") from None
        return value

    @field_validator("train")
    @classmethod
    def _check_train(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value:
            try:
                load_teacher_config(value)
            except ConfigError as exc:
                raise ValueError(f"invalid teacher training config: {exc.message}") from None
        return value

    @field_validator("tile_overlap")
    @classmethod
    def _check_overlap(cls, value: int, info: ValidationInfo) -> int:
        tile = info.data.get("tile")
        if tile is not None and value >= tile:
            raise ValueError(f"must be smaller than teacher.tile ({tile})")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> TeacherSpec:
        given = [name for name in _SOURCES if getattr(self, name)]
        if len(given) != 1:
            got = f"got {' and '.join(given)}" if given else "got none"
            raise ValueError(
                "give exactly one teacher source: checkpoint, run_dir, weights (+ model) or train; " + got
            )
        return self

    @property
    def kind(self) -> str:
        return next(name for name in _SOURCES if getattr(self, name))


class ECOConfig(MethodConfig):
    """Knobs of ECO (``methods.eco.*``)."""

    mode: Mode = Field("eco", description="eco (Eq. 14 mixup) | noise_free (D(ŷc), ŷc) | kd (x, ŷc)")
    schedule: Shape = Field(
        "linear",
        description="shape of α_t: linear | cosine | step | sigmoid (the authors' code)",
    )
    alpha_start: float = Field(0.0, ge=0, le=1, description="α0, the weight of the real pair at step 0")
    ramp_fraction: float = Field(
        1.0, ge=0, le=1, description="fraction of training by which α reaches 1 (0: vanilla at once)"
    )
    step_count: int = Field(1, ge=1, description="step shape: number of equal jumps up to 1")
    teacher: TeacherSpec = Field(description="the pretrained SR network F_pre")
    teacher_input: Literal["task", "clean"] = Field(
        "task", description="teacher input: the task's LR (noisy for realworld_sr) or the clean bicubic LR"
    )
    centroid_dtype: CentroidDtype = Field(
        "uint8", description="storage of ŷc (uint8 is what saving SR images as PNG gives)"
    )
    allow_quantized_input: bool = Field(
        False,
        description="accept 8-bit LR inputs (task.quantize_input) or stored LR files: D(y_t) = x_t "
        "then holds only up to the rounding of x",
    )

    def stages(self, experiment: ExperimentConfig) -> dict[str, StageDefinition]:
        """The centroids ŷc of the training set (which depend on the teacher: a ``train``
        stage when the teacher is trained from a config)."""
        from resweep.config_stages import (
            parse_stage,  # the kind's class, by name: stages sit above methods
        )

        task = experiment.task
        return {
            "centroids": parse_stage(dict(
                kind="eco_centroids",
                teacher=self.teacher.model_dump(mode="json", exclude_defaults=False),
                task=task.model_dump(mode="json"),
                data=experiment.data.train.model_dump(mode="json"),
                teacher_input=self.teacher_input,
                centroid_dtype=self.centroid_dtype,
                clean_lr=task.kind == "realworld_sr" and task.noise_sigma > 0,
            ), field="methods.eco.centroids")
        }


def load_teacher_config(train: dict[str, Any]) -> ExperimentConfig:
    """The experiment config of a teacher to train (``methods.eco.teacher.train``)."""
    from resweep.config import ExperimentConfig

    return ExperimentConfig.from_dict(train, source="methods.eco.teacher.train")
