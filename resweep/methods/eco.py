"""ECO: empirical centroid-oriented optimisation (Lee & Heo, AAAI 2024).

A pretrained SR network ``F_pre`` (the teacher) estimates the centroid of the plausible HR
images, ``ŷc = F_pre(x)``, once per whole training image (cached, shared by every trial of a
sweep: :mod:`resweep.methods.eco_centroids`). Training pairs, by ``mode``:

* ``eco`` (Eq. 14): ``x_t = α_t·x + (1−α_t)·D(ŷc)``, ``y_t = α_t·y + (1−α_t)·ŷc``, with α_t
  rising from ``alpha_start`` to 1 by ``ramp_fraction`` of training (shape ``schedule``);
* ``noise_free`` (Eq. 11): ``(D(ŷc), ŷc)`` throughout (ECO at α = 0);
* ``kd`` (Eq. 9, the spatially inconsistent baseline): ``(x, ŷc)``.

Because D (MATLAB bicubic) is linear, ``D(y_t) = x_t`` for every α provided ``x = D(y)``
exactly. Decisions that follow from that:

* ``task.quantize_input`` must be false: an 8-bit LR is ``Q(D(y)) ≠ D(y)`` and the blend
  would be misaligned by up to ``α/510``. ``allow_quantized_input: true`` accepts it (that is
  what the authors' code does, reading PNG files) and records a note; the same switch admits
  paired sets, whose stored LR files are not D(y) of their GT either. Evaluation then uses
  the same unquantised LR as training, for vanilla and ECO alike (presets set it for both).
* ``D(ŷc)`` is computed from the *stored* (quantised) centroid, so it is exact for what the
  batch contains.
* Tasks: ``sr`` and ``realworld_sr`` only. For ``realworld_sr`` (the paper's real-world x2:
  bicubic LR plus colour Gaussian noise) D is the task's degradation *with the sample's own
  noise draw n*: ``x = D_bic(y) + n`` and the synthetic input is ``D_bic(ŷc) + n``, so that
  ``x_t = D_bic(y_t) + n`` — the mixed pair is a valid observation of ``y_t`` under the
  task's degradation, and the network sees noisy inputs at every α. ``n`` is recovered per
  sample as ``x − D_bic(y)`` (the cache also stores ``D_bic(y)`` for noisy tasks). The teacher
  sees the task's LR of the whole image (noise drawn with the image index as seed) or, with
  ``teacher_input: clean``, the noise-free ``D_bic(y)`` (for a bicubic-SR teacher).

The blend runs in ``transform_batch`` on the device: a few elementwise ops on tensors the
loader already produced, so a step costs what a vanilla step costs plus that blend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from resweep.errors import ConfigError, ResweepError
from resweep.methods import Method, MethodConfig, MethodContext, register_method
from resweep.methods import eco_centroids as cache

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
                cache.load_teacher_config(value)
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
    centroid_dtype: cache.CentroidDtype = Field(
        "uint8", description="storage of ŷc (uint8 is what saving SR images as PNG gives)"
    )
    allow_quantized_input: bool = Field(
        False,
        description="accept 8-bit LR inputs (task.quantize_input) or stored LR files: D(y_t) = x_t "
        "then holds only up to the rounding of x",
    )


def alpha_at(
    iteration: int,
    total_iterations: int,
    *,
    shape: Shape = "linear",
    alpha_start: float = 0.0,
    ramp_fraction: float = 1.0,
    step_count: int = 1,
) -> float:
    """α before step ``iteration`` (0-based) of ``total_iterations``.

    ``p = iteration / (ramp_fraction · total)`` clipped to [0, 1];
    ``α = α0 + (1 − α0)·f(p)`` with f = p (linear), (1 − cos πp)/2 (cosine),
    ⌊p·k⌋/k (step, k = ``step_count``; k = 1 switches to vanilla at the ramp end), or the
    authors' clipped sigmoid ``clip(1.2·(σ(10(p − ½)) − ½), −½, ½) + ½`` (0 until p ≈ 0.26,
    1 from p ≈ 0.74).
    """
    ramp = ramp_fraction * total_iterations
    p = 1.0 if ramp <= 0 else min(1.0, max(0.0, iteration / ramp))
    if shape == "linear":
        f = p
    elif shape == "cosine":
        f = 0.5 * (1.0 - math.cos(math.pi * p))
    elif shape == "step":
        f = math.floor(p * step_count + 1e-9) / step_count
    elif shape == "sigmoid":
        sig = 1.0 / (1.0 + math.exp(-10.0 * (p - 0.5)))
        f = min(max(1.2 * (sig - 0.5), -0.5), 0.5) + 0.5
    else:
        raise ValueError(f"unknown schedule shape {shape!r}")
    return alpha_start + (1.0 - alpha_start) * f


class CentroidExtras:
    """``TrainPatchDataset`` extras: ŷc (GT grid), D(ŷc) and, for noisy tasks, D(y) (LR grid)
    of an image, as lazily cropped memory-mapped views. Picklable for loader workers."""

    def __init__(self, store: cache.CentroidStore, previous: Any = None):
        self.store, self.previous = store, previous

    def __call__(self, index: int) -> dict[str, tuple[Any, int]]:
        out = dict(self.previous(index)) if self.previous is not None else {}
        out["centroid"] = (self.store.view("centroid", index), self.store.scale)
        out["centroid_lr"] = (self.store.view("centroid_lr", index), 1)
        if self.store.has_clean_lr:
            out["clean_lr"] = (self.store.view("clean_lr", index), 1)
        return out


def blend(batch: dict[str, torch.Tensor], alpha: float, mode: Mode = "eco") -> dict[str, torch.Tensor]:
    """The training pair of ``mode`` at ``alpha`` from a batch with lq, gt, centroid, centroid_lr
    (and clean_lr for noisy tasks, whose noise ``lq − clean_lr`` is added to D(ŷc))."""
    x, y = batch["lq"], batch["gt"]
    c, c_lr = batch["centroid"], batch["centroid_lr"]
    if "clean_lr" in batch:
        c_lr = c_lr + (x - batch["clean_lr"])
    out = dict(batch)
    if mode == "kd":
        out["gt"] = c
    elif mode == "noise_free":
        out["lq"], out["gt"] = c_lr, c
    elif alpha < 1.0:
        # α·x + (1−α)·c == c + α·(x − c); at α = 1 the batch is exactly the vanilla one.
        out["lq"] = torch.lerp(c_lr, x, alpha)
        out["gt"] = torch.lerp(c, y, alpha)
    return out


@register_method
class ECO(Method):
    name: ClassVar[str] = "eco"
    config_class: ClassVar[type[MethodConfig]] = ECOConfig

    def __init__(self, config: ECOConfig, context: MethodContext):
        super().__init__(config, context)
        self.config: ECOConfig = config
        task = context.config.task
        if task.kind not in ECO_TASKS:
            raise ConfigError(
                f"ECO is for super-resolution tasks ({', '.join(ECO_TASKS)}), not '{task.kind}'",
                field="task.kind",
            )
        if task.quantize_input and not config.allow_quantized_input:
            raise ConfigError(
                "ECO needs x = D(y) exactly so that D(y_t) = x_t for every α; 8-bit LR inputs break "
                "that. Set task.quantize_input: false (for every trial you compare), or "
                "methods.eco.allow_quantized_input: true to accept the rounding (the authors' setting)",
                field="task.quantize_input",
            )
        self.task_config = task
        self.total_iterations = int(context.config.train.iterations)
        self.cache_dir = Path(context.cache_dir)
        self.device = context.world.device
        self.is_main = context.world.is_main
        self.log = context.log
        self.store: cache.CentroidStore | None = None
        self.teacher_source = ""

    # ------------------------------------------------------------------ schedule
    def alpha(self, iteration: int) -> float:
        if self.config.mode != "eco":
            return 0.0  # the target is the centroid throughout
        c = self.config
        return alpha_at(
            iteration,
            self.total_iterations,
            shape=c.schedule,
            alpha_start=c.alpha_start,
            ramp_fraction=c.ramp_fraction,
            step_count=c.step_count,
        )

    # ------------------------------------------------------------------ teacher
    def resolve_teacher(self) -> cache.ResolvedTeacher:
        spec, scale = self.config.teacher, self.task_config.scale
        base_field = "methods.eco.teacher"
        kind = spec.kind
        if kind == "weights":
            assert spec.weights is not None and spec.model is not None
            teacher = cache.teacher_from_weights(
                spec.weights, spec.model, spec.model_kwargs, scale, field=f"{base_field}.weights"
            )
        else:
            if kind == "checkpoint":
                assert spec.checkpoint is not None
                path = spec.checkpoint
            elif kind == "run_dir":
                assert spec.run_dir is not None
                path = cache.latest_checkpoint(spec.run_dir, field=f"{base_field}.run_dir")
            else:
                path = cache.train_teacher(
                    cache.load_teacher_config(spec.train),
                    cache_dir=self.cache_dir,
                    device=self.device,
                    log=self.log,
                )
            teacher = cache.teacher_from_checkpoint(path, use_ema=spec.use_ema, field=f"{base_field}.{kind}")
        if teacher.scale != scale:
            raise ConfigError(
                f"the teacher ({teacher.source}) is a x{teacher.scale} model but the task is x{scale}",
                field=f"{base_field}.{kind}",
            )
        return teacher

    # ------------------------------------------------------------------ hooks
    def wrap_train_dataset(self, dataset: Any) -> Any:
        from resweep.data.datasets import TrainPatchDataset

        if not isinstance(dataset, TrainPatchDataset):
            raise ResweepError(
                f"ECO needs the engine's TrainPatchDataset (full images for the teacher), got "
                f"{type(dataset).__name__}; is another method wrapping the dataset first?"
            )
        if dataset.paired and not self.config.allow_quantized_input:
            raise ConfigError(
                "ECO with a paired set: its stored LR files are not D(y) of their GT exactly, so "
                "D(y_t) = x_t would not hold. Use the clean HR folder (kind: folder) or set "
                "methods.eco.allow_quantized_input: true",
                field="data.train.kind",
            )
        # Building/training the teacher draws random numbers; fork the RNG so a trial that
        # computes the cache continues exactly like one that finds it.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.store = self._prepare_centroids(dataset)
        return TrainPatchDataset(
            dataset.source,
            dataset.task,
            dataset.patch_size,
            dataset.augment,
            extras=CentroidExtras(self.store, previous=dataset.extras),
        )

    def _prepare_centroids(self, dataset: Any) -> cache.CentroidStore:
        teacher = self.resolve_teacher()
        self.teacher_source = teacher.source
        t = self.task_config
        noisy = t.kind == "realworld_sr" and t.noise_sigma > 0
        task_key: dict[str, Any] = {"kind": t.kind, "scale": t.scale, "quantize_input": t.quantize_input}
        if noisy:
            task_key["noise_sigma"] = t.noise_sigma
        request = cache.CentroidRequest(
            dataset=dataset,
            teacher=teacher,
            task=task_key,
            teacher_input=self.config.teacher_input,
            centroid_dtype=self.config.centroid_dtype,
            clean_lr=noisy,
            tile=self.config.teacher.tile,
            tile_overlap=self.config.teacher.tile_overlap,
        )
        return cache.ensure_centroids(
            request, cache_dir=self.cache_dir, device=self.device, log=self.log, progress=self.is_main
        )

    def transform_batch(self, batch: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
        if "centroid" not in batch:
            raise ResweepError("ECO: the batch has no 'centroid'; was wrap_train_dataset bypassed?")
        return blend(batch, self.alpha(iteration), self.config.mode)

    def metrics(self, iteration: int) -> dict[str, float]:
        return {"alpha": self.alpha(iteration)}

    def notes(self) -> list[str]:
        notes = [f"ECO mode '{self.config.mode}', teacher: {self.teacher_source or self.config.teacher.kind}"]
        if self.store is not None:
            notes.append(f"centroids: {self.store.path} ({len(self.store)} images, {self.store.dtype})")
        if self.task_config.quantize_input:
            notes.append("8-bit LR inputs: D(y_t) = x_t only up to α·(rounding of x) (allow_quantized_input)")
        if self.task_config.kind == "realworld_sr":
            notes.append("realworld_sr: D(ŷc) carries the sample's own noise draw (x_t = D(y_t) + n)")
        return notes
