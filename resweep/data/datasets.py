"""Training patches and evaluation sets.

Training samples are addressed by ``(image_index, sample_seed)`` keys that the engine's
sampler derives from (seed, iteration, rank): a sample depends on its key only, so a resumed
run sees exactly the batches it would have seen, and ranks see different ones.

For clean-image sources the degradation runs on the fly on the GT crop plus
``task.context_margin`` pixels of context, which makes a patch of a deterministic task
exactly the same crop of the fully degraded image (checked in the tests) at the cost of a
crop, not a whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from resweep.data.crops import (
    augment_aligned,
    centre_crop,
    crop_aligned,
    eval_seed,
    mod_crop,
    random_crop_params,
)
from resweep.data.sources import ImageSource, PairedSource, build_source
from resweep.degradations.tasks import Task
from resweep.errors import DataError

if TYPE_CHECKING:
    from resweep.config import DatasetSpec, ExperimentConfig

__all__ = [
    "EvalItem",
    "EvalSet",
    "TrainPatchDataset",
    "augment_aligned",
    "build_eval_set",
    "build_train_dataset",
    "crop_aligned",
    "eval_seed",
    "mod_crop",
    "random_crop_params",
]

# Extra per-image tensors a method wants cropped with the pair: name -> (tensor, scale vs LQ).
ExtrasFn = Callable[[int], dict[str, tuple[Tensor, int]]]


# --------------------------------------------------------------------------- training
class TrainPatchDataset(Dataset):
    """Random aligned ``(lq, gt)`` patches; keys are ``(image_index, sample_seed)`` tuples.

    ``dataset[(i, seed)]`` -> ``{"lq": (3, p, p), "gt": (3, p*s, p*s), "index": i}`` (plus
    the ``extras`` tensors, if given, cropped and augmented the same way). An int key ``i``
    means ``(i, i)``. ``len()`` is the number of images.
    """

    def __init__(
        self,
        source: ImageSource,
        task: Task,
        patch_size: int,
        augment: bool,
        extras: ExtrasFn | None = None,
    ) -> None:
        self.source, self.task = source, task
        self.patch_size, self.augment = int(patch_size), bool(augment)
        self.scale = task.scale
        self.extras = extras
        self.paired = isinstance(source, PairedSource)
        if self.paired and source.scale != task.scale:  # type: ignore[attr-defined]
            raise DataError(
                f"paired set {source.name} has scale {source.scale} "  # type: ignore[attr-defined]
                f"but the task has scale {task.scale}"
            )
        if len(source) == 0:
            raise DataError(f"training set {source.name} has no images")
        self._lq_hw: list[tuple[int, int]] = []
        too_small = []
        s, p = self.scale, self.patch_size
        for i in range(len(source)):
            # Sizes from headers / stored shapes: nothing is decoded here.
            if self.paired:
                lh, lw = source.lq_hw(i)  # type: ignore[attr-defined]
                h, w = lh * s, lw * s
            else:
                h, w = source.image_hw(i)
                lh, lw = h // s, w // s
            self._lq_hw.append((lh, lw))
            if lh < p or lw < p:
                too_small.append(f"{source.describe(i)} ({h}x{w} -> LQ {lh}x{lw})")
        if too_small:
            shown = "; ".join(too_small[:5]) + (
                f"; ... ({len(too_small)} in all)" if len(too_small) > 5 else ""
            )
            raise DataError(
                f"image(s) too small for LQ patches of {p}x{p} (GT {p * s}x{p * s}, scale {s}): "
                f"{shown}. Lower data.patch_size or remove these images."
            )

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Tensor | int]:
        if isinstance(key, (tuple, list)):
            index, sample_seed = int(key[0]), int(key[1])
        else:
            index = sample_seed = int(key)
        generator = torch.Generator().manual_seed(sample_seed)
        s, p = self.scale, self.patch_size
        top, left = random_crop_params(self._lq_hw[index], p, generator)
        if self.paired:
            lq_full, gt_full = self.source.load_pair(index)  # type: ignore[attr-defined]
            sample = crop_aligned({"lq": (lq_full, 1), "gt": (gt_full, s)}, top, left, p)
        else:
            sample = self._degrade_crop(index, top, left, generator)
        if self.extras is not None:
            sample.update(crop_aligned(self.extras(index), top, left, p))
        if self.augment:
            sample = augment_aligned(sample, generator)
        out: dict[str, Tensor | int] = {k: v.contiguous() for k, v in sample.items()}
        out["index"] = index
        return out

    def _degrade_crop(
        self, index: int, top: int, left: int, generator: torch.Generator
    ) -> dict[str, Tensor]:
        s, p, m = self.scale, self.patch_size, self.task.context_margin
        lh, lw = self._lq_hw[index]
        # GT region plus the degradation's context, clipped at the (mod-cropped) borders;
        # every bound is a multiple of s, so the LQ grid of the region is the global one.
        y0, x0 = max(0, top * s - m), max(0, left * s - m)
        y1, x1 = min(lh * s, (top + p) * s + m), min(lw * s, (left + p) * s + m)
        region = self.source.load_crop(index, y0, x0, y1 - y0, x1 - x0)
        lq_region = self.task.degrade(region, generator)
        gy, gx = top * s - y0, left * s - x0
        return {
            "lq": lq_region[:, gy // s : gy // s + p, gx // s : gx // s + p],
            "gt": region[:, gy : gy + p * s, gx : gx + p * s],
        }

    def full_pair(self, image_index: int) -> dict[str, Tensor]:
        """The whole image: GT mod-cropped to the scale, LQ degraded with a generator seeded
        by ``image_index`` (for paired sources: the stored pair)."""
        if self.paired:
            lq, gt = self.source.load_pair(image_index)  # type: ignore[attr-defined]
            return {"lq": lq, "gt": gt}
        gt = mod_crop(self.source.load(image_index), self.scale)
        lq = self.task.degrade(gt, torch.Generator().manual_seed(int(image_index)))
        return {"lq": lq, "gt": gt}


def build_train_dataset(cfg: ExperimentConfig, task: Task) -> TrainPatchDataset:
    """The training patches of ``cfg.data`` for ``task`` (video sets: temporal windows)."""
    if cfg.data.train.kind.startswith("video_") or task.kind == "video_denoise":
        from resweep.data.video import build_video_train_dataset

        return build_video_train_dataset(cfg, task)  # type: ignore[return-value]
    source = build_source(cfg.data.train, scale=task.scale)
    return TrainPatchDataset(source, task, cfg.data.patch_size, cfg.data.augment)


# --------------------------------------------------------------------------- evaluation
class EvalItem(NamedTuple):
    image_name: str
    lq: Tensor
    gt: Tensor


@dataclass
class EvalSet:
    """Fixed ``(image_name, lq, gt)`` triples: the same inputs for every trial of a study."""

    name: str
    items: list[EvalItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[EvalItem]:
        return iter(self.items)

    def __getitem__(self, i: int) -> EvalItem:
        return self.items[i]


def build_eval_set(
    spec: DatasetSpec, task: Task, *, seed: int, max_side: int | None = None
) -> EvalSet:
    """Load ``spec`` once and degrade it with per-image generators seeded from
    ``(seed, image index)``; GT mod-cropped to the scale and, with ``max_side``, centre-cropped
    to at most ``max_side`` (rounded down to a multiple of the scale). Paired sources use the
    stored LQ images. Video sets give a :class:`~resweep.data.video.ClipEvalSet`."""
    if spec.kind.startswith("video_") or task.kind == "video_denoise":
        from resweep.data.video import build_clip_eval_set

        return build_clip_eval_set(spec, task, seed=seed, max_side=max_side)  # type: ignore[return-value]
    source = build_source(spec, scale=task.scale)
    s = task.scale
    side = None
    if max_side is not None:
        side = max_side // s * s
        if side < s:
            raise ValueError(f"max_side {max_side} is smaller than the scale {s}")
    items = []
    for i in range(len(source)):
        if isinstance(source, PairedSource):
            lq, gt = source.load_pair(i)
            if side is not None:
                lh, lw = lq.shape[-2:]
                sh, sw = min(lh, side // s), min(lw, side // s)
                top, left = (lh - sh) // 2, (lw - sw) // 2
                lq = lq[:, top : top + sh, left : left + sw]
                gt = gt[:, top * s : (top + sh) * s, left * s : (left + sw) * s]
        else:
            gt = mod_crop(source.load(i), s)
            if gt.shape[-1] == 0 or gt.shape[-2] == 0:
                raise DataError(f"{source.describe(i)} is smaller than the scale {s}")
            if side is not None:
                gt = centre_crop(gt, min(gt.shape[-2], side), min(gt.shape[-1], side), align=s)
            lq = task.degrade(gt, torch.Generator().manual_seed(eval_seed(seed, i)))
        items.append(EvalItem(source.image_name(i), lq.contiguous(), gt.contiguous()))
    return EvalSet(name=source.name, items=items)
