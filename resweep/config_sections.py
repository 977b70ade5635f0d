"""The sections of an experiment config: task, data, model, optimisation, loss, training, evaluation.

:class:`resweep.config.ExperimentConfig` assembles these; import them from ``resweep.config``
(which re-exports them) or from here. Like ``resweep.config`` this module imports nothing above
the config layer: registry names are plain strings checked against the tables of
:mod:`resweep.name_tables` when a section is validated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from resweep.config_io import expand_path
from resweep.config_stages import parse_stage
from resweep.name_tables import OPTIMIZERS, PIXEL_LOSSES, TASKS

__all__ = [
    "DataConfig",
    "DatasetSpec",
    "DivergenceConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "StrictModel",
    "TaskConfig",
    "TrainConfig",
    "VideoTaskConfig",
]

class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt knob must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- task
class VideoTaskConfig(StrictModel):
    """Video tasks only (``video_denoise``): the temporal window the network sees."""

    num_frames: int = Field(5, ge=1, description="T: noisy frames per network input (odd)")
    target: Literal["centre", "all"] = Field(
        "centre", description="restore the window's centre frame, or all of its frames"
    )
    noise_sigma_range: tuple[float, float] | None = Field(
        None, description="draw sigma (8-bit scale) uniformly per clip from this range instead of noise_sigma"
    )
    eval_noise_sigma: float | None = Field(
        None, ge=0, description="evaluation clips' sigma (8-bit scale); default: as training "
        "(noise_sigma, or drawn from noise_sigma_range). FastDVDnet trains over a range and "
        "reports each sigma on its own"
    )

    @model_validator(mode="after")
    def _check(self) -> VideoTaskConfig:
        if self.num_frames % 2 == 0:
            raise ValueError(f"num_frames must be odd (a centre frame), got {self.num_frames}")
        if self.noise_sigma_range is not None:
            lo, hi = self.noise_sigma_range
            if not 0 <= lo <= hi:
                raise ValueError(f"noise_sigma_range must satisfy 0 <= low <= high, got {(lo, hi)}")
        return self


class TaskConfig(StrictModel):
    """The degradation that turns a clean image into the network input."""

    kind: str = Field("sr", description="a registered task (resweep.degradations.tasks.TASKS)")
    scale: int = Field(2, description="SR factor; must be 1 for pure denoising tasks")
    noise_sigma: float = Field(
        25.0, ge=0, description="Gaussian noise std on the 8-bit scale (denoise, denoise_sr, realworld_sr)"
    )
    shot_noise_range: tuple[float, float] = Field(
        (0.0, 0.003), description="lambda_shot range of heteroscedastic noise, variance = shot*y + read"
    )
    read_noise_range: tuple[float, float] = Field((0.0, 0.003))
    quantize_input: bool = Field(True, description="round the degraded input to 8 bits, as saved LR files are")
    video: VideoTaskConfig = Field(default_factory=VideoTaskConfig)

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        return TASKS.check(value)

    @model_validator(mode="after")
    def _check_scale(self) -> TaskConfig:
        # the task's class is the one statement of its scales (imports the task's module)
        scales = TASKS.get(self.kind).allowed_scales
        if self.scale not in scales:
            wanted = f"scale {scales[0]}" if len(scales) == 1 else f"scale in {', '.join(map(str, scales))}"
            raise ValueError(f"task kind '{self.kind}' needs {wanted}, got {self.scale}")
        for name in ("shot_noise_range", "read_noise_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {(lo, hi)}")
        return self


# --------------------------------------------------------------------------- data
class DatasetSpec(StrictModel):
    """One image source: a folder of clean images, paired LQ/GT folders, the demo set or a patch store."""

    kind: Literal["folder", "paired", "demo", "patch_store", "video_folder", "video_demo"] = "demo"
    path: Path | None = Field(
        None, description="folder of clean images, the patch store file, or (video_folder) a "
        "folder of clip folders of frames 0000.png, 0001.png... or one such clip folder"
    )
    lq_path: Path | None = None
    gt_path: Path | None = None
    name: str | None = Field(None, description="name in metrics and tables (default: folder name)")
    max_images: int | None = Field(None, ge=1, description="use only the first N images (sorted)")
    split: Literal["train", "eval", "all"] = Field(
        "all", description="demo only: which of its photographs to use"
    )
    niqe: bool | Literal["y", "gray"] = Field(
        False,
        description="evaluation sets only: also compute NIQE per image (slow; lower is better). "
        "true or 'y': on the Y channel of MATLAB rgb2ycbcr (BasicSR's default, the protocol of "
        "the SR papers); 'gray': on MATLAB rgb2gray (what MATLAB's niqe does with RGB)",
    )
    max_frames: int | None = Field(
        None, ge=1, description="video evaluation only: use only the first N frames of each clip"
    )

    @field_validator("path", "lq_path", "gt_path", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return expand_path(value)

    @field_validator("niqe", mode="before")
    @classmethod
    def _niqe_choice(cls, value: Any) -> Any:
        # exact choices only: pydantic would otherwise read "yes", "n", "1"... as booleans
        if isinstance(value, bool) or value in ("y", "gray"):
            return value
        raise ValueError(f"niqe must be true, false, 'y' or 'gray', got {value!r}")

    @model_validator(mode="after")
    def _check_paths(self) -> DatasetSpec:
        if self.kind in ("folder", "patch_store", "video_folder") and self.path is None:
            raise ValueError(f"dataset kind '{self.kind}' needs 'path'")
        if self.kind == "paired" and (self.lq_path is None or self.gt_path is None):
            raise ValueError("dataset kind 'paired' needs both 'lq_path' and 'gt_path'")
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.kind in ("demo", "video_demo"):
            stem = "demo" if self.kind == "demo" else "video-demo"
            return stem if self.split == "all" else f"{stem}-{self.split}"
        path = self.gt_path if self.kind == "paired" else self.path
        assert path is not None
        return Path(path).stem if self.kind == "patch_store" else Path(path).name


class DataConfig(StrictModel):
    train: DatasetSpec = Field(default_factory=lambda: DatasetSpec(kind="demo", split="train"))

    @field_validator("train")
    @classmethod
    def _no_niqe_on_train(cls, value: DatasetSpec) -> DatasetSpec:
        if value.niqe:
            raise ValueError("niqe is an evaluation option: set it on eval.sets[i], not data.train")
        return value
    patch_size: int = Field(48, ge=4, description="input (LQ) patch side; the GT patch is patch_size*scale")
    batch_size: int = Field(16, ge=1, description="total over all workers; must divide by the worker count")
    augment: bool = Field(True, description="random flips and 90-degree rotations")
    loader_workers: int = Field(0, ge=0, description="DataLoader processes per training worker")


# --------------------------------------------------------------------------- model / optimisation
class ModelConfig(StrictModel):
    name: str = "edsr_baseline"
    kwargs: dict[str, Any] = Field(default_factory=dict, description="size overrides, e.g. n_feats")
    init_from: Path | dict[str, Any] | None = Field(
        None,
        description="initialise weights from a resweep checkpoint or a weights file, or from a "
        "stage's artifact: a stage definition mapping with a 'kind' (see resweep.stages)",
    )
    reinit_last_layer: bool = Field(
        False, description="re-initialise model.last_layer after init_from (proxy evaluation)"
    )
    init_new_head: bool = Field(
        False, description="init_from may lack a new task head (e.g. an SR upsampler): keep it freshly initialised"
    )

    @field_validator("init_from")
    @classmethod
    def _check_init_from(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return parse_stage(value, field="model.init_from").model_dump(mode="json")
        return value


class OptimConfig(StrictModel):
    name: str = Field("adam", description="a registered optimiser (resweep.engine.optim.OPTIMIZERS)")
    lr: float = Field(1e-4, gt=0)
    lr_scale: float = Field(
        1.0,
        gt=0,
        description="multiplies lr: a variant can say 'twice the recipe's lr' (ECO authors' "
        "code) whatever the budget's lr is",
    )
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.9, ge=0, description="sgd only")
    grad_clip: float | None = Field(None, gt=0, description="max global grad norm")
    grad_value_clip: float | None = Field(
        None,
        gt=0,
        description="clamp every gradient element to [-v, v] (EDSR-code 'gclip'; the ECO "
        "authors' configs use 0.1 with an L1 loss on the 0..255 scale)",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return OPTIMIZERS.check(value)


class ScheduleConfig(StrictModel):
    kind: Literal["constant", "step", "cosine"] = "cosine"
    milestones: list[int] = Field(default_factory=list, description="step schedule: iterations")
    gamma: float = Field(0.5, gt=0, le=1)
    warmup_iterations: int = Field(0, ge=0)
    min_lr: float = Field(1e-7, ge=0, description="cosine floor")


class LossConfig(StrictModel):
    pixel: str = Field("l1", description="a registered pixel loss (resweep.losses.PIXEL_LOSSES)")
    pixel_weight: float = Field(1.0, ge=0)

    @field_validator("pixel")
    @classmethod
    def _check_pixel(cls, value: str) -> str:
        return PIXEL_LOSSES.check(value)


class DivergenceConfig(StrictModel):
    """When a run counts as collapsed. Collapse is a result (status 'diverged'), not a crash."""

    max_abs_loss: float = Field(1e3, gt=0, description="|loss| above this is a collapse")
    # SPN collapses can keep the loss bounded while the outputs fall apart: look at PSNR too.
    eval_psnr_margin_db: float | None = Field(
        None,
        gt=0,
        description="an evaluation whose RGB PSNR on any set is more than this many dB below "
        "the no-learning reference (bicubic / the noisy input) is a collapse (off: null)",
    )
    eval_nonfinite: bool = Field(
        True, description="non-finite (NaN/inf) model outputs in an evaluation are a collapse"
    )


class TrainConfig(StrictModel):
    iterations: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1, description="report training loss every N iterations")
    checkpoint_every: int | None = Field(
        None, ge=1, description="default: at every evaluation"
    )
    checkpoints_to_keep: int = Field(2, ge=1)
    seed: int = 0
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="EMA of weights used for evaluation (e.g. 0.999)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(
        True,
        description="bf16 autocast of the model's forward on CUDA (methods' loss networks and "
        "distances stay fp32 unless a method sets loss_precision: bf16; SPN keeps its forward "
        "fp32 too); ignored on CPU",
    )
    channels_last: bool = Field(True, description="channels-last memory format on CUDA")
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig)
    skip_loss_spike: float | None = Field(
        None,
        gt=0,
        description="skip the optimiser step when the step's loss exceeds this factor times "
        "the mean loss of the previous logging window (EDSR-code 'skip_threshold'; off: null)",
    )
    trainable: Literal["all", "last_layer"] = Field(
        "all", description="last_layer: freeze every parameter but model.last_layer's (proxy evaluation)"
    )


# Precise-BN batches when eval.precise_bn_batches is left unset and the model has BatchNorm:
# a few hundred samples, as Wu & Johnson (2021) find enough; ~a third of a training step each.
DEFAULT_PRECISE_BN_BATCHES = 32


class EvalConfig(StrictModel):
    every: int = Field(200, ge=1, description="evaluate every N iterations (and at the end)")
    sets: list[DatasetSpec] = Field(
        default_factory=lambda: [DatasetSpec(kind="demo", split="eval")]
    )
    crop_border: int | None = Field(None, ge=0, description="default: the SR scale, 0 for denoising")
    max_side: int | None = Field(
        None, ge=8, description="centre-crop evaluation images to this side (quick CPU runs)"
    )
    seed: int = Field(1234, description="seed of the fixed evaluation degradation (noise)")
    precise_bn_batches: int | None = Field(
        None,
        ge=0,
        description="before each evaluation, recompute BatchNorm running statistics over this "
        "many training batches with the current weights (precise BN: running averages lag a "
        "fast-moving network and can wreck evaluation); null: "
        f"{DEFAULT_PRECISE_BN_BATCHES} when the model has BatchNorm layers; 0: off",
    )
    precise_bn_patch_size: int | None = Field(
        None,
        ge=8,
        description="crop size of the precise-BN batches (null: data.patch_size). Set it "
        "larger when training crops are small against the network's downsampling: their BN "
        "statistics are dominated by padded borders and do not hold on whole evaluation frames. A "
        "pass costs ~batches x (crop / patch)^2 / 3 training steps (benchmarks/bench_precise_bn.py)",
    )
    save_images: bool = Field(
        False, description="save outputs of the final evaluation as PNG (for visual comparisons)"
    )
    amp: bool = Field(
        False,
        description="bf16 autocast in evaluation on CUDA; off by default (bf16 moves PSNR in "
        "the second decimal)",
    )
    quantize_input: bool | None = Field(
        None,
        description="round the evaluation input to 8 bits (the benchmark protocol: LR files are "
        "8-bit); null: as task.quantize_input (training may keep exact LR)",
    )
    averages: dict[str, list[str]] = Field(
        default_factory=dict,
        description="named averages over evaluation sets, reported as eval.<name>.<metric> "
        "(e.g. {Avg: [Set14, B100, Urban100, Manga109]})",
    )

    @model_validator(mode="after")
    def _check_averages(self) -> EvalConfig:
        names = [s.display_name for s in self.sets]
        for average, members in self.averages.items():
            if average in names:
                raise ValueError(f"averages.{average}: the name is already an evaluation set")
            if not members:
                raise ValueError(f"averages.{average}: name at least one evaluation set")
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValueError(
                    f"averages.{average}: unknown evaluation set(s) {unknown}; eval.sets are {names}"
                )
        return self
