"""ECO: empirical centroid-oriented optimisation (Lee & Heo, AAAI 2024).

A pretrained SR network ``F_pre`` (the teacher, :mod:`resweep.methods.eco_teacher`) estimates
the centroid of the plausible HR images, ``ŷc = F_pre(x)``, once per whole training image.
That is an ``eco_centroids`` stage (declared by ``ECOConfig.stages``, made once per study by
:mod:`resweep.stages`, files in :mod:`resweep.methods.eco_centroids`); this module only reads
it. Knobs: :mod:`resweep.methods.eco_config`. Training pairs, by ``mode``:

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
from typing import Any, ClassVar

import torch

from resweep.errors import ConfigError, ResweepError
from resweep.methods import register_method
from resweep.methods.base import Method, MethodConfig, MethodContext
from resweep.methods.eco_centroids import CentroidStore
from resweep.methods.eco_config import ECO_TASKS, ECOConfig, Mode, Shape, TeacherSpec

CENTROIDS_ROLE = "centroids"

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

    def __init__(self, store: CentroidStore, previous: Any = None):
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
        self.artifact_dir = context.artifact_dir  # role -> local folder (see ECOConfig.stages)
        self.store: CentroidStore | None = None
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

    # ------------------------------------------------------------------ hooks
    def wrap_train_dataset(self, dataset: Any) -> Any:
        from resweep.data.datasets import TrainPatchDataset
        from resweep.methods.eco_centroids import lr_sizes

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
        self.store = CentroidStore(self.artifact_dir(CENTROIDS_ROLE))
        self.teacher_source = str(self.store.manifest.get("teacher_source", ""))
        if self.store.lr_hw != [tuple(hw) for hw in lr_sizes(dataset)]:
            raise ResweepError(
                f"eco: the centroids in {self.store.path} were made for other images than this "
                "run's training set (data.train)"
            )
        return TrainPatchDataset(
            dataset.source,
            dataset.task,
            dataset.patch_size,
            dataset.augment,
            extras=CentroidExtras(self.store, previous=dataset.extras),
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


__all__ = ["ECO", "ECOConfig", "TeacherSpec", "alpha_at", "blend"]
