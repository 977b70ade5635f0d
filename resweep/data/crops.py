"""Aligned crops and flips of the tensors of one sample, and per-image evaluation seeds:
shared by the image datasets (:mod:`resweep.data.datasets`) and the video ones
(:mod:`resweep.data.video`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["augment_aligned", "centre_crop", "crop_aligned", "eval_seed", "mod_crop", "random_crop_params"]


def mod_crop(img: Tensor, scale: int) -> Tensor:
    """Crop the bottom/right so that H and W are multiples of ``scale`` (SR convention)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def random_crop_params(
    lq_hw: tuple[int, int], patch_size: int, generator: torch.Generator
) -> tuple[int, int]:
    """Uniform ``(top, left)`` of a ``patch_size`` crop in an LQ image of size ``lq_hw``."""
    h, w = int(lq_hw[0]), int(lq_hw[1])
    if h < patch_size or w < patch_size:
        raise ValueError(f"LQ image {h}x{w} is smaller than the patch size {patch_size}")
    top = int(torch.randint(0, h - patch_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - patch_size + 1, (1,), generator=generator))
    return top, left


def crop_aligned(
    tensors: dict[str, tuple[Tensor, int]], top: int, left: int, patch_size: int
) -> dict[str, Tensor]:
    """Crop every tensor at LQ position ``(top, left)``, side ``patch_size``, each scaled by
    its own factor relative to the LQ (1 for LQ-sized, ``scale`` for GT-sized tensors)."""
    out = {}
    for name, (tensor, s) in tensors.items():
        y, x, side = top * s, left * s, patch_size * s
        crop = tensor[..., y : y + side, x : x + side]
        if crop.shape[-2:] != (side, side):
            raise ValueError(
                f"'{name}' of size {tuple(tensor.shape[-2:])} (scale {s}) is too small for a "
                f"{side}x{side} crop at ({y}, {x})"
            )
        out[name] = crop
    return out


def augment_aligned(tensors: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """Apply one random horizontal flip / vertical flip / transpose (together: the 8 flips
    and 90-degree rotations) to every tensor, so aligned tensors stay aligned."""
    hflip, vflip, transpose = (bool(b) for b in torch.randint(0, 2, (3,), generator=generator))
    out = {}
    for name, t in tensors.items():
        if hflip:
            t = t.flip(-1)
        if vflip:
            t = t.flip(-2)
        if transpose:
            t = t.transpose(-2, -1)
        out[name] = t.contiguous()
    return out


def eval_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit generator seed for image ``index`` of an evaluation set."""
    state = np.random.SeedSequence([seed % 2**64, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def centre_crop(img: Tensor, side_h: int, side_w: int, align: int = 1) -> Tensor:
    """The centred ``side_h x side_w`` crop, its corner rounded down to a multiple of ``align``."""
    h, w = img.shape[-2:]
    top = ((h - side_h) // 2) // align * align
    left = ((w - side_w) // 2) // align * align
    return img[..., top : top + side_h, left : left + side_w]
