"""MATLAB-compatible ``imresize`` (bicubic, optional antialiasing) in PyTorch.

The SR literature creates its LR images with MATLAB's ``imresize(hr, 1/s, 'bicubic')``.
``torch.nn.functional.interpolate`` (even with ``antialias=True``) and PIL use other
kernels/conventions, and the difference is measurable in PSNR, so this module follows
MATLAB's ``imresize.m`` exactly:

* cubic kernel of Keys with a = -0.5, width 4;
* when downscaling with antialiasing, the kernel is stretched by ``1/scale``;
* per output index ``x`` (1-based) the centre in input coordinates is
  ``u = x/scale + 0.5*(1 - 1/scale)``, the first tap ``floor(u - width/2)``,
  ``P = ceil(width) + 2`` taps; weights are normalised per output sample; out-of-range
  taps are mirrored (symmetric padding, ``[1..n, n..1]`` repeated; older MATLAB releases
  clamped instead, available as ``padding="replicate"``); tap columns whose weights are
  all zero are dropped;
* the dimension with the smaller scale factor is resized first (stable sort, so rows
  first on a tie);
* output size ``ceil(scale * input_size)``.

Each 1-D pass is a gather of the P taps followed by a weighted sum. That keeps the
operator linear in the image (ECO relies on ``D`` being linear), differentiable and
device-agnostic, and, unlike a dense matmul or a convolution, it is never silently run
in TF32 on GPUs when a trainer enables reduced-precision matmuls.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch

__all__ = ["bicubic_downsample", "bicubic_upsample", "contributions", "imresize"]

_KERNEL_WIDTH = 4.0

Padding = Literal["symmetric", "replicate"]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def contributions(
    in_length: int,
    out_length: int,
    scale: float,
    antialias: bool = True,
    padding: Padding = "symmetric",
) -> tuple[np.ndarray, np.ndarray]:
    """Taps of one 1-D resize, as MATLAB's ``contributions()`` (float64).

    Returns ``(weights, indices)``, both of shape ``(out_length, P')``; ``indices`` are
    0-based input positions (already mirrored/clamped), ``weights`` rows sum to 1.
    """
    if scale < 1 and antialias:
        # Stretch the kernel so it also low-pass filters (antialiasing).
        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)

        kernel_width = _KERNEL_WIDTH / scale
    else:
        kernel = _cubic
        kernel_width = _KERNEL_WIDTH

    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    num_taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(num_taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)

    if padding == "symmetric":
        # Current MATLAB: index sequence 1..n, n..1 repeated (its `aux` vector).
        aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
        idx = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    elif padding == "replicate":
        # Older MATLAB releases clamped indices (replicated the end samples).
        idx = np.clip(indices.astype(np.int64) - 1, 0, in_length - 1)
    else:
        raise ValueError(f"padding must be 'symmetric' or 'replicate', got {padding!r}")

    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx[:, keep]


@functools.lru_cache(maxsize=256)
def _cached_taps(
    in_length: int,
    out_length: int,
    scale: float,
    antialias: bool,
    padding: Padding,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    weights, idx = contributions(in_length, out_length, scale, antialias, padding)
    return (
        torch.as_tensor(weights, dtype=dtype, device=device),
        torch.as_tensor(idx, dtype=torch.long, device=device),
    )


def _resize_along(
    x: torch.Tensor, dim: int, out_length: int, scale: float, antialias: bool, padding: Padding
) -> torch.Tensor:
    """Resize ``x`` along ``dim`` (-2: rows, -1: columns)."""
    in_length = x.shape[dim]
    weights, idx = _cached_taps(in_length, out_length, scale, antialias, padding, x.dtype, x.device)
    num_taps = idx.shape[1]
    gathered = x.index_select(dim, idx.reshape(-1))
    if dim == -1:
        gathered = gathered.unflatten(-1, (out_length, num_taps))
        return (gathered * weights).sum(dim=-1)
    gathered = gathered.unflatten(-2, (out_length, num_taps))
    return (gathered * weights[:, :, None]).sum(dim=-2)


def imresize(
    img: torch.Tensor,
    scale: float | None = None,
    output_size: tuple[int, int] | None = None,
    antialias: bool = True,
    *,
    padding: Padding = "symmetric",
) -> torch.Tensor:
    """MATLAB ``imresize(img, scale)`` / ``imresize(img, [h w])`` with the bicubic kernel.

    ``img`` is ``(C, H, W)`` or ``(B, C, H, W)``, float32 or float64; the dtype is kept
    and values are neither clamped nor quantised (callers decide). Give ``scale`` (output
    size ``ceil(scale * size)``, as MATLAB) or ``output_size`` (per-dimension scale
    ``out / in``, as MATLAB). Giving both uses ``scale`` for the kernel and
    ``output_size`` for the size, which MATLAB does internally when it derives the size.

    ``padding="symmetric"`` is what recent MATLAB releases do (mirrored indices, as in
    MathWorks' resize code of 2018 and the common Python ports). ``"replicate"``
    reproduces older releases, which clamped indices: numbers printed by MATLAB and
    published in 2011 and 2013 match it (see tests/test_imresize.py). The two differ only
    in the output samples whose kernel reaches two or more samples past the border.

    float32 is within ~3e-7 of the float64 result on [0, 1] images; when LR images are
    quantised to 8 bits, float32 moves a few pixels in 1e5 by one level (values that land
    on exactly k + 0.5), so make datasets in float64 if they must be bit-exact.
    """
    if img.dim() not in (3, 4):
        raise ValueError(f"expected (C,H,W) or (B,C,H,W), got shape {tuple(img.shape)}")
    if img.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"imresize needs float32/float64 input, got {img.dtype}")
    in_h, in_w = int(img.shape[-2]), int(img.shape[-1])
    if scale is None and output_size is None:
        raise ValueError("give scale or output_size")
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        scales = (float(scale), float(scale))
        if output_size is None:
            output_size = (math.ceil(scale * in_h), math.ceil(scale * in_w))
    else:
        assert output_size is not None
        scales = (output_size[0] / in_h, output_size[1] / in_w)
    out_h, out_w = int(output_size[0]), int(output_size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output size must be positive, got {(out_h, out_w)}")

    # MATLAB resizes the dimension with the smaller scale first (stable sort: rows on ties).
    order = (-2, -1) if scales[0] <= scales[1] else (-1, -2)
    out = img
    for dim in order:
        if dim == -2:
            out = _resize_along(out, -2, out_h, scales[0], antialias, padding)
        else:
            out = _resize_along(out, -1, out_w, scales[1], antialias, padding)
    return out


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """``imresize(hr, 1/scale)``; HR must already be cropped to a multiple of ``scale``."""
    h, w = hr.shape[-2], hr.shape[-1]
    if h % scale or w % scale:
        raise ValueError(f"HR size {(h, w)} is not a multiple of scale {scale}; crop it first")
    out = imresize(hr, scale=1.0 / scale)
    assert out.shape[-2:] == (h // scale, w // scale)
    return out


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """``imresize(lr, scale)`` (the usual bicubic baseline / pre-upsampling input)."""
    return imresize(lr, scale=float(scale))
