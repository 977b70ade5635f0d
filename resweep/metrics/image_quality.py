"""PSNR / SSIM as the super-resolution literature computes them.

Conventions (EDSR/RCAN/SwinIR evaluation, BasicSR's ``calculate_psnr``/``calculate_ssim``):

* images are quantised to 8 bits first (the papers measure saved PNGs);
* ``scale`` border pixels are cropped for SR (``crop_border``);
* Y channel of BT.601 YCbCr as MATLAB's ``rgb2ycbcr``: ``Y = 16 + 65.481 R + 128.553 G +
  24.966 B`` for RGB in [0, 1], on the 0..255 scale (not rounded to integers, as BasicSR);
* PSNR with peak 255; SSIM of Wang et al. (their MATLAB ``ssim_index.m``): 11x11 Gaussian
  window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering (no padding), the
  mean of the SSIM map; for RGB the mean of the per-channel SSIMs.

Everything is computed in float64 on the input's device; results are Python floats.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "batch_psnr",
    "image_metrics",
    "psnr",
    "quantize",
    "rgb_to_y",
    "ssim",
]

# BT.601 luma for RGB in [0, 1] -> [16, 235] (MATLAB rgb2ycbcr, first row).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_PEAK = 255.0


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """Y of YCbCr (BT.601, MATLAB ``rgb2ycbcr``) on the 0..255 scale for RGB in [0, 1].

    ``img`` is ``(3, H, W)`` or ``(B, 3, H, W)``; the channel dimension is kept (size 1).
    """
    if img.dim() not in (3, 4) or img.shape[-3] != 3:
        raise ValueError(f"expected (3,H,W) or (B,3,H,W), got shape {tuple(img.shape)}")
    r, g, b = img.unbind(dim=-3)
    y = _Y_OFFSET + _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b
    return y.unsqueeze(-3)


def quantize(img: torch.Tensor) -> torch.Tensor:
    """8-bit quantisation ``round(clamp(img, 0, 1) * 255) / 255`` (as saving a PNG)."""
    return torch.round(img.clamp(0.0, 1.0) * 255.0) / 255.0


def _as_single(img: torch.Tensor, name: str) -> torch.Tensor:
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3:
        raise ValueError(f"{name}: expected a single image (C,H,W), got {tuple(img.shape)}")
    return img


def _prepare(
    pred: torch.Tensor,
    target: torch.Tensor,
    crop_border: int,
    y_channel: bool,
    quantize_8bit: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as float64 on the 0..255 scale, cropped, optionally Y only."""
    pred = _as_single(pred, "pred")
    target = _as_single(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    out = []
    for img in (pred, target):
        x = img.detach().to(dtype=torch.float64)
        # Work on integer values 0..255 when quantising, so RGB errors are exact.
        x = torch.round(x.clamp(0.0, 1.0) * _PEAK) if quantize_8bit else x * _PEAK
        if crop_border:
            x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        if y_channel:
            # A grey image is its own luma; the SR evaluation scripts keep it as is.
            x = rgb_to_y(x / _PEAK) if x.shape[0] == 3 else x
        out.append(x)
    if out[0].numel() == 0:
        raise ValueError("image is empty after cropping")
    return out[0], out[1]


def _psnr255(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(_PEAK**2 / mse)


@functools.lru_cache(maxsize=8)
def _gaussian_1d(device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian; its outer product is MATLAB's fspecial('gaussian', 11, 1.5)."""
    half = _SSIM_WINDOW // 2
    t = torch.arange(-half, half + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(t**2) / (2.0 * _SSIM_SIGMA**2))
    return g / g.sum()


def _ssim255(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over channels of the mean 'valid' SSIM map; a, b: (C,H,W) float64, 0..255."""
    c, h, w = a.shape
    if h < _SSIM_WINDOW or w < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels, got {h}x{w}")
    g = _gaussian_1d(a.device)
    # Separable filtering (rows then columns) = the 2-D window, 'valid' = no padding.
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=0).unsqueeze(1)
    filt = F.conv2d(stack, g.view(1, 1, -1, 1))
    filt = F.conv2d(filt, g.view(1, 1, 1, -1)).squeeze(1)
    mu_a, mu_b, e_aa, e_bb, e_ab = filt.split(c, dim=0)
    c1 = (_SSIM_K1 * _PEAK) ** 2
    c2 = (_SSIM_K2 * _PEAK) ** 2
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a, var_b, cov = e_aa - mu_aa, e_bb - mu_bb, e_ab - mu_ab
    ssim_map = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2)).mean().item()


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    quantize_8bit: bool = True,
) -> float:
    """PSNR in dB (peak 255) of one image pair ``(C,H,W)`` in [0, 1]; ``inf`` if equal."""
    a, b = _prepare(pred, target, crop_border, y_channel, quantize_8bit)
    return _psnr255(a, b)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    quantize_8bit: bool = True,
) -> float:
    """SSIM (Wang et al., 'valid' 11x11 Gaussian window) of one image pair in [0, 1]."""
    a, b = _prepare(pred, target, crop_border, y_channel, quantize_8bit)
    return _ssim255(a, b)


def image_metrics(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0
) -> dict[str, float]:
    """``psnr``, ``ssim`` (RGB) and ``psnr_y``, ``ssim_y`` (Y channel), 8-bit quantised."""
    a, b = _prepare(pred, target, crop_border, y_channel=False, quantize_8bit=True)
    ay, by = (rgb_to_y(a / _PEAK), rgb_to_y(b / _PEAK)) if a.shape[0] == 3 else (a, b)
    return {
        "psnr": _psnr255(a, b),
        "ssim": _ssim255(a, b),
        "psnr_y": _psnr255(ay, by),
        "ssim_y": _ssim255(ay, by),
    }


def batch_psnr(
    preds: torch.Tensor,
    targets: torch.Tensor,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    quantize_8bit: bool = True,
) -> list[float]:
    """Per-image PSNR of a batch ``(B,C,H,W)``; the literature averages these per image."""
    if preds.shape != targets.shape or preds.dim() != 4:
        raise ValueError(f"expected equal (B,C,H,W) shapes, got {preds.shape}, {targets.shape}")
    return [
        psnr(p, t, crop_border=crop_border, y_channel=y_channel, quantize_8bit=quantize_8bit)
        for p, t in zip(preds, targets, strict=True)
    ]
