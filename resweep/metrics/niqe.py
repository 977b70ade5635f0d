"""NIQE, the "completely blind" natural-image quality evaluator (lower is better).

Mittal, Soundararajan and Bovik, IEEE SPL 2013. This follows the authors' MATLAB release (and
MATLAB's ``niqe``) as BasicSR's port computes it, which is where the restoration papers' numbers
come from:

* a luminance image on the 0..255 scale, rounded to integers: by default the Y channel of MATLAB
  ``rgb2ycbcr`` (``convert_to="y"``, BasicSR's default and the protocol of the golden value), or
  MATLAB ``rgb2gray`` (``convert_to="gray"``, what the MATLAB release and ``niqe()`` do with an
  RGB image);
* the image cropped to whole 96x96 blocks;
* at two scales (the second after MATLAB bicubic ``imresize(img, 0.5)``, antialiased, not
  rounded): MSCN coefficients ``(I - μ) / (σ + 1)`` with the 7x7 Gaussian window of the model
  file (replicate padding, as ``imfilter(..., 'replicate')``), then per block (96x96, then 48x48)
  18 features: the AGGD fit of the coefficients (shape, mean scale) and of their products with
  the four neighbours (shape, mean, left and right scales); the AGGD shape is found on the grid
  0.2:0.001:10 as in the release;
* the distance ``sqrt((μ_p − μ)ᵀ ((Σ_p + Σ)/2)⁺ (μ_p − μ))`` between the Gaussian fitted to the
  image's blocks (rows with NaN dropped for the covariance) and the pristine one shipped in
  ``resweep/metrics/data/niqe_pris_params.npz`` (origin and licence next to it).

Precision. The reference port (BasicSR 1.4.2 ``calculate_niqe``) casts the image to float32,
so its MSCN maps and its half-size image are float32. That is not a detail: the local variance
``E[I²] − μ²`` cancels catastrophically in float32 (``I²`` reaches 65025, one float32 step is
~0.004), so in flat and nearly flat regions σ is set by rounding, and NIQE moves by 0.08
between float32 and float64 on an image with flat areas (CSet14 ``ppt3``), by 1e-4..2e-2 on
photographs. The published numbers, and MATLAB's golden value below (within 1e-5 of the float32
computation, 4e-4 from the float64 one), carry that rounding, so this module reproduces the
reference arithmetic: the same float32 MSCN (scipy sums the window in double and rounds once,
as BasicSR's ``convolve``), and the half-size image resized in float32 line by line with the
same taps and the same ``torch.mv`` products as BasicSR's ``imresize``. Since the second scale
is sensitive to the last bit of the resized image (a 1-ulp change on some pixels moves NIQE by
up to ~7e-4), a BLAS that sums in another order can move the result by that much. The AGGD fits
and the pooling run in float64 (the reference's float32 means move NIQE by < 2e-5 on the test
images). Against BasicSR 1.4.2 on 12 photographs of 287x285 to 872x1000 the gap is < 5e-5
(tests/test_niqe_basicsr.py), where the float64 pipeline was up to 8e-2 away. Vectorised over blocks. Golden value (tests/test_niqe.py): CSet14
``baboon.png[:, :492]`` gives 5.72957338 in MATLAB R2021a.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Literal

import numpy as np
import torch
from scipy.ndimage import correlate
from scipy.special import gamma as gamma_fn

from resweep.degradations.imresize import contributions
from resweep.metrics.image_quality import rgb_to_y

__all__ = ["NIQE_BLOCK_SIZE", "NiqeConversion", "niqe", "niqe_y", "pristine_model", "rgb_to_gray"]

NiqeConversion = Literal["y", "gray"]

NIQE_BLOCK_SIZE = 96
PARAMS_FILE = "niqe_pris_params.npz"
# The release's grid of AGGD shape values (MATLAB ``gam = 0.2:0.001:10``).
_SHAPE_GRID = np.linspace(0.2, 10.0, 9801)
# Neighbour offsets of the pairwise products (horizontal, vertical, two diagonals).
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
# MATLAB ``rgb2gray``: the first row of the inverse NTSC (YIQ) matrix, not 0.299/0.587/0.114.
_GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)
# imresize(·, 0.5) with antialiasing: 8 taps, output i reads input rows 2i-3 .. 2i+4.
_HALF_TAPS, _HALF_PAD = 8, 3


@functools.lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mu (36,), cov (36, 36), gaussian_window (7, 7))`` from the package data."""
    path = resources.files("resweep.metrics").joinpath("data", PARAMS_FILE)
    with resources.as_file(path) as local, np.load(local) as data:
        mu = np.asarray(data["mu_pris_param"], dtype=np.float64).reshape(-1)
        cov = np.asarray(data["cov_pris_param"], dtype=np.float64)
        window = np.asarray(data["gaussian_window"], dtype=np.float64)
    return mu, cov, window


@functools.lru_cache(maxsize=1)
def _shape_ratio_grid() -> np.ndarray:
    g = _SHAPE_GRID
    return gamma_fn(2.0 / g) ** 2 / (gamma_fn(1.0 / g) * gamma_fn(3.0 / g))


def _aggd_fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD ``(shape α, left scale β_l, right scale β_r)`` per row of ``samples`` (N, n).

    Moment matching of the release's ``estimateaggdparam``; rows without negative (or positive)
    samples give NaN, which the pooling step drops, as MATLAB's ``nancov``/``nanmean`` do.
    """
    neg = samples < 0
    pos = samples > 0
    sq = samples * samples
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((sq * neg).sum(axis=1) / neg.sum(axis=1))
        right_std = np.sqrt((sq * pos).sum(axis=1) / pos.sum(axis=1))
        gamma_hat = left_std / right_std
        r_hat = np.abs(samples).mean(axis=1) ** 2 / sq.mean(axis=1)
        r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    ratios = _shape_ratio_grid()
    # (N, 9801) squared differences; first minimum as MATLAB's min(); NaN rows stay NaN.
    diff = (ratios[None, :] - r_hat_norm[:, None]) ** 2
    bad = ~np.isfinite(r_hat_norm)
    diff[bad] = 0.0
    alpha = _SHAPE_GRID[np.argmin(diff, axis=1)]
    alpha[bad] = np.nan
    with np.errstate(invalid="ignore"):
        factor = np.sqrt(gamma_fn(1.0 / alpha) / gamma_fn(3.0 / alpha))
    return alpha, left_std * factor, right_std * factor


def _block_features(blocks: np.ndarray) -> np.ndarray:
    """The 18 features of the release's ``computefeature`` for each block (N, h, w) -> (N, 18)."""
    n = blocks.shape[0]
    flat = blocks.reshape(n, -1)
    alpha, beta_l, beta_r = _aggd_fit(flat)
    columns = [alpha, (beta_l + beta_r) / 2]
    for shift in _SHIFTS:
        # circshift within each block, as the release does on every block on its own
        shifted = np.roll(blocks, shift, axis=(1, 2)).reshape(n, -1)
        alpha, beta_l, beta_r = _aggd_fit(flat * shifted)
        with np.errstate(invalid="ignore"):
            mean = (beta_r - beta_l) * gamma_fn(2.0 / alpha) / gamma_fn(1.0 / alpha)
        columns += [alpha, mean, beta_l, beta_r]
    return np.stack(columns, axis=1)


def _mscn(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (imfilter 'replicate' = mode 'nearest').

    float32 in, float32 out, as the reference port (see the module docstring): scipy sums each
    window in double and rounds the result to float32 once; the rest is float32 arithmetic.
    """
    image = image.astype(np.float32, copy=False)
    mu = correlate(image, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(image * image, window, mode="nearest") - mu * mu))
    return (image - mu) / (sigma + np.float32(1.0))


def _half_along(t: torch.Tensor, dim: int) -> torch.Tensor:
    """One 1-D pass of ``imresize(·, 0.5)`` in float32, one ``mv`` per output line.

    The layout (symmetric padding of 3, a slice of 8 padded lines per output) and the products
    are those of BasicSR's ``imresize``, so that the float32 sums round the same way.
    """
    n = t.shape[dim]
    weights, _ = contributions(n, n // 2, 0.5, antialias=True)
    assert weights.shape[1] == _HALF_TAPS, weights.shape
    # C-contiguous rows, as the reference's: mv sums in another order for a strided vector
    taps = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))
    pad = _HALF_PAD
    mirror = np.concatenate([np.arange(pad - 1, -1, -1), np.arange(n), np.arange(n - 1, n - 1 - pad, -1)])
    padded = t.index_select(dim, torch.from_numpy(mirror))
    if dim == 0:
        out = torch.empty(n // 2, t.shape[1], dtype=torch.float32)
        for i in range(n // 2):
            out[i] = padded[2 * i : 2 * i + _HALF_TAPS].T.mv(taps[i])
    else:
        out = torch.empty(t.shape[0], n // 2, dtype=torch.float32)
        for i in range(n // 2):
            out[:, i] = padded[:, 2 * i : 2 * i + _HALF_TAPS].mv(taps[i])
    return out


def _half_size(image: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(image, 0.5)`` (bicubic, antialiased) of an even-sized 0..255 image, in
    float32 on the [0, 1] scale as the reference port computes it (rows first, then columns)."""
    t = torch.from_numpy(image.astype(np.float32) / np.float32(255.0))
    return _half_along(_half_along(t, 0), 1).numpy() * np.float32(255.0)


def _split_blocks(image: np.ndarray, rows: int, cols: int, size: int) -> np.ndarray:
    """``(rows*cols, size, size)`` blocks, column-major order as MATLAB's blkproc (order is irrelevant)."""
    h, w = rows * size, cols * size
    grid = image[:h, :w].reshape(rows, size, cols, size)
    return grid.transpose(2, 0, 1, 3).reshape(rows * cols, size, size)


def niqe_y(y: np.ndarray | torch.Tensor, block_size: int = NIQE_BLOCK_SIZE) -> float:
    """NIQE of a luminance image on the 0..255 scale (already rounded as the protocol says)."""
    image = (y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y))
    image = np.squeeze(image).astype(np.float64)
    if image.ndim != 2:
        raise ValueError(f"NIQE needs a single-channel image (H, W), got shape {image.shape}")
    if block_size % 2:
        raise ValueError(f"block_size must be even (the second scale halves it), got {block_size}")
    rows, cols = image.shape[0] // block_size, image.shape[1] // block_size
    if rows * cols < 2:
        raise ValueError(
            f"NIQE needs at least two {block_size}x{block_size} blocks to fit a covariance; "
            f"the image is {image.shape[0]}x{image.shape[1]}"
        )
    mu_p, cov_p, window = pristine_model()
    image = image[: rows * block_size, : cols * block_size].astype(np.float32)

    features = []
    for scale in (1, 2):
        size = block_size // scale
        mscn = _mscn(image, window).astype(np.float64)
        features.append(_block_features(_split_blocks(mscn, rows, cols, size)))
        if scale == 1:
            image = _half_size(image)
    feats = np.concatenate(features, axis=1)

    mu = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]
    if complete.shape[0] < 2:
        raise ValueError("NIQE: fewer than two blocks have finite features (a flat image?)")
    cov = np.cov(complete, rowvar=False)
    delta = mu_p - mu
    quality = delta @ np.linalg.pinv((cov_p + cov) / 2.0) @ delta
    return float(np.sqrt(quality))


def rgb_to_gray(img: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2gray`` of ``(3, H, W)`` RGB in [0, 1], on the 0..255 scale (not rounded)."""
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"expected (3,H,W), got shape {tuple(img.shape)}")
    r, g, b = img.unbind(dim=0)
    return 255.0 * (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b)


def niqe(
    image: torch.Tensor,
    crop_border: int = 0,
    quantize_8bit: bool = True,
    convert_to: NiqeConversion = "y",
) -> float:
    """NIQE of one RGB (or grey) image ``(C, H, W)`` in [0, 1]; lower is better.

    As the papers measure saved images: 8-bit quantisation, then the luminance rounded to
    integers (half away from zero, as MATLAB's uint8 cast), optional border crop. ``convert_to``
    picks the luminance of an RGB image: ``"y"``, Y of MATLAB ``rgb2ycbcr`` (BasicSR's default,
    the golden value's protocol), or ``"gray"``, MATLAB ``rgb2gray`` (the MATLAB release's and
    MATLAB ``niqe``'s). BasicSR's ``"gray"`` uses OpenCV's 0.299/0.587/0.114 in float32 and
    rounds half to even: ~1% of pixels land on another integer, which moves NIQE by up to 1.6e-2
    (CSet14 baboon), so ``"gray"`` reproduces MATLAB's ``niqe`` on RGB, not BasicSR's ``"gray"``.
    """
    if convert_to not in ("y", "gray"):
        raise ValueError(f"convert_to must be 'y' or 'gray', got {convert_to!r}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected one image (C,H,W) with 1 or 3 channels, got {tuple(image.shape)}")
    x = image.detach().to(device="cpu", dtype=torch.float64).clamp(0.0, 1.0)
    if quantize_8bit:
        x = torch.round(x * 255.0) / 255.0
    to_luminance = (lambda rgb: rgb_to_y(rgb)[0]) if convert_to == "y" else rgb_to_gray
    y = x[0] * 255.0 if x.shape[0] == 1 else to_luminance(x)
    y = torch.floor(y + 0.5)  # values are positive: half away from zero
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return niqe_y(y)
