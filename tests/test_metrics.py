"""PSNR/SSIM of the SR literature, checked against independent float64 computations.

References: plain NumPy formulas written here, a direct windowed-loop SSIM, SciPy
correlation, and scikit-image's ``peak_signal_noise_ratio`` / ``structural_similarity``
(Gaussian weights, sigma 1.5, population covariance; its map is compared on the region
where its border padding plays no role, i.e. cropped by the window radius 5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage import color as skcolor
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from resweep.degradations import bicubic_downsample, bicubic_upsample
from resweep.metrics import batch_psnr, image_metrics, psnr, quantize, rgb_to_y, ssim

# --------------------------------------------------------------------------------------
# Independent references (NumPy, float64, images on the 0..255 scale).
# --------------------------------------------------------------------------------------


def _np_to255(img: torch.Tensor, quantize_8bit: bool = True) -> np.ndarray:
    x = img.detach().double().numpy()
    return np.round(np.clip(x, 0, 1) * 255) if quantize_8bit else x * 255


def _np_y(rgb255: np.ndarray) -> np.ndarray:
    """(3,H,W) 0..255 -> (H,W) BT.601 luma 16..235 (MATLAB rgb2ycbcr, unrounded)."""
    r, g, b = rgb255 / 255.0
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def _np_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def _gauss_window() -> np.ndarray:
    """MATLAB fspecial('gaussian', 11, 1.5)."""
    t = np.arange(-5, 6, dtype=np.float64)
    w = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    return w / w.sum()


C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def _ssim_formula(
    mu_a: np.ndarray | float,
    mu_b: np.ndarray | float,
    var_a: np.ndarray | float,
    var_b: np.ndarray | float,
    cov: np.ndarray | float,
) -> np.ndarray | float:
    return ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / (
        (mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2)
    )


def _np_ssim_loop(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM, one 11x11 window at a time, 'valid' positions only (2-D)."""
    w = _gauss_window()
    vals = []
    for r in range(a.shape[0] - 10):
        for c in range(a.shape[1] - 10):
            pa, pb = a[r : r + 11, c : c + 11], b[r : r + 11, c : c + 11]
            mu_a, mu_b = (w * pa).sum(), (w * pb).sum()
            var_a = (w * (pa - mu_a) ** 2).sum()
            var_b = (w * (pb - mu_b) ** 2).sum()
            cov = (w * (pa - mu_a) * (pb - mu_b)).sum()
            vals.append(_ssim_formula(mu_a, mu_b, var_a, var_b, cov))
    return float(np.mean(vals))


def _np_ssim_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """Same with scipy correlation of the whole image, then the 'valid' part."""
    w = _gauss_window()

    def filt(x: np.ndarray) -> np.ndarray:
        return ndi.correlate(x, w, mode="constant")[5:-5, 5:-5]

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    return float(_ssim_formula(mu_a, mu_b, var_a, var_b, cov).mean())


def _skimage_ssim_valid(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image's SSIM map (Gaussian sigma 1.5 -> 11x11) on the 'valid' region."""
    _, smap = structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        full=True,
    )
    return float(smap[5:-5, 5:-5].mean())


# --------------------------------------------------------------------------------------
# Test images: a real photo and a bicubic x4 reconstruction of it (a typical SR pair),
# with values outside [0, 1] and off the 8-bit grid so clamping/quantising matter.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    hr = torch.from_numpy(skdata.astronaut()[40:136, 180:292].astype(np.float32) / 255)
    hr = hr.permute(2, 0, 1).contiguous()  # (3, 96, 112)
    sr = bicubic_upsample(bicubic_downsample(hr, 4), 4)
    gen = torch.Generator().manual_seed(0)
    sr = sr + 0.01 * torch.randn(sr.shape, generator=gen)
    assert sr.min() < 0 or sr.max() > 1
    return sr, hr


# --------------------------------------------------------------------------------------
# rgb_to_y / quantize
# --------------------------------------------------------------------------------------


def test_rgb_to_y_known_values() -> None:
    colours = torch.tensor(
        [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64
    )  # black, white, red, green, blue
    img = colours.T[:, None, :]  # (3, 1, 5)
    y = rgb_to_y(img)
    assert y.shape == (1, 1, 5)
    expected = [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]
    np.testing.assert_allclose(y[0, 0].numpy(), expected, rtol=0, atol=1e-12)
    # Batched input keeps the batch and a singleton channel.
    assert rgb_to_y(img[None].expand(2, 3, 1, 5)).shape == (2, 1, 1, 5)
    with pytest.raises(ValueError):
        rgb_to_y(torch.zeros(4, 2, 2))


def test_rgb_to_y_matches_skimage(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, hr = pair
    ours = rgb_to_y(hr.double())[0].numpy()
    # skimage's rgb2ycbcr uses the same BT.601 matrix, Y in [16, 235].
    ref = skcolor.rgb2ycbcr(hr.double().permute(1, 2, 0).numpy())[..., 0]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


def test_quantize() -> None:
    x = torch.tensor([-0.2, 0.0, 0.3, 0.5, 1.0, 1.3, 77.6 / 255], dtype=torch.float64)
    q = quantize(x)
    np.testing.assert_allclose(
        (q * 255).numpy(), [0, 0, round(0.3 * 255), 128, 255, 255, 78], rtol=0, atol=1e-12
    )
    torch.testing.assert_close(quantize(q), q, rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_matches_references(pair: tuple[torch.Tensor, torch.Tensor], crop_border: int) -> None:
    sr, hr = pair
    a, b = _np_to255(sr), _np_to255(hr)
    if crop_border:
        a = a[:, crop_border:-crop_border, crop_border:-crop_border]
        b = b[:, crop_border:-crop_border, crop_border:-crop_border]
    rgb = psnr(sr, hr, crop_border=crop_border)
    assert rgb == pytest.approx(_np_psnr(a, b), abs=1e-10)
    assert rgb == pytest.approx(peak_signal_noise_ratio(b, a, data_range=255), abs=1e-10)
    y = psnr(sr, hr, crop_border=crop_border, y_channel=True)
    ya, yb = _np_y(a), _np_y(b)
    assert y == pytest.approx(_np_psnr(ya, yb), abs=1e-10)
    assert y == pytest.approx(peak_signal_noise_ratio(yb, ya, data_range=255), abs=1e-10)
    assert 20 < y < 40 and abs(y - rgb) > 0.1  # a realistic SR pair; Y is not RGB


def test_psnr_known_values(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, hr = pair
    target = quantize(hr.double()).clamp(max=254 / 255)
    # Every value off by exactly one 8-bit level: MSE = 1 -> 20 log10(255) dB.
    assert psnr(target + 1 / 255, target) == pytest.approx(20 * math.log10(255), abs=1e-9)
    # On Y a one-level shift of all of R, G, B moves Y by 219/255.
    expected_y = 20 * math.log10(255) - 20 * math.log10(219 / 255)
    assert psnr(target + 1 / 255, target, y_channel=True) == pytest.approx(expected_y, abs=1e-9)
    assert psnr(hr, hr) == float("inf")
    assert psnr(hr, hr, y_channel=True, crop_border=4) == float("inf")
    # Differences below half a level vanish after 8-bit quantisation, not without it.
    assert psnr(target + 0.4 / 255, target) == float("inf")
    no_q = psnr(target + 0.4 / 255, target, quantize_8bit=False)
    assert no_q == pytest.approx(20 * math.log10(255 / 0.4), abs=1e-6)


def test_psnr_without_quantisation(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    a, b = _np_to255(sr, quantize_8bit=False), _np_to255(hr, quantize_8bit=False)
    assert psnr(sr, hr, quantize_8bit=False) == pytest.approx(_np_psnr(a, b), abs=1e-9)


# --------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------


def test_ssim_matches_window_loop(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    sr_s, hr_s = sr[:, 30:54, 40:68], hr[:, 30:54, 40:68]  # 24 x 28 -> 14 x 18 windows
    a, b = _np_to255(sr_s), _np_to255(hr_s)
    ref_y = _np_ssim_loop(_np_y(a), _np_y(b))
    assert ssim(sr_s, hr_s, y_channel=True) == pytest.approx(ref_y, abs=1e-12)
    ref_rgb = np.mean([_np_ssim_loop(a[c], b[c]) for c in range(3)])
    assert ssim(sr_s, hr_s) == pytest.approx(ref_rgb, abs=1e-12)


@pytest.mark.parametrize("crop_border", [0, 4])
def test_ssim_matches_scipy_and_skimage(
    pair: tuple[torch.Tensor, torch.Tensor], crop_border: int
) -> None:
    sr, hr = pair
    a, b = _np_to255(sr), _np_to255(hr)
    if crop_border:
        a = a[:, crop_border:-crop_border, crop_border:-crop_border]
        b = b[:, crop_border:-crop_border, crop_border:-crop_border]
    ya, yb = _np_y(a), _np_y(b)
    got_y = ssim(sr, hr, crop_border=crop_border, y_channel=True)
    assert got_y == pytest.approx(_np_ssim_scipy(ya, yb), abs=1e-12)
    assert got_y == pytest.approx(_skimage_ssim_valid(ya, yb), abs=1e-10)
    got_rgb = ssim(sr, hr, crop_border=crop_border)
    ref_rgb = np.mean([_skimage_ssim_valid(a[c], b[c]) for c in range(3)])
    assert got_rgb == pytest.approx(ref_rgb, abs=1e-10)
    assert 0.5 < got_y < 0.99


def test_ssim_window_and_border_matter(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The conventions are not interchangeable: the tolerances above would catch them."""
    sr, hr = pair
    ya, yb = _np_y(_np_to255(sr)), _np_y(_np_to255(hr))
    ours = ssim(sr, hr, y_channel=True)
    uniform = structural_similarity(ya, yb, win_size=11, data_range=255)
    assert abs(ours - uniform) > 1e-3
    mssim, smap = structural_similarity(
        ya,
        yb,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        full=True,
    )
    # skimage's scalar already averages only the 'valid' part of its map; averaging its
    # whole (reflect-padded) map is a different number.
    assert ours == pytest.approx(mssim, abs=1e-10)
    assert abs(ours - smap.mean()) > 1e-4
    assert ssim(hr, hr) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------------------
# Helpers and input handling
# --------------------------------------------------------------------------------------


def test_image_metrics_and_batch(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    m = image_metrics(sr, hr, crop_border=4)
    assert set(m) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    assert m["psnr"] == psnr(sr, hr, crop_border=4)
    assert m["ssim"] == ssim(sr, hr, crop_border=4)
    assert m["psnr_y"] == psnr(sr, hr, crop_border=4, y_channel=True)
    assert m["ssim_y"] == ssim(sr, hr, crop_border=4, y_channel=True)
    assert all(isinstance(v, float) for v in m.values())
    batch = batch_psnr(torch.stack([sr, hr]), torch.stack([hr, hr]), crop_border=4)
    assert batch == [m["psnr"], float("inf")]
    # A (1,C,H,W) tensor is accepted as one image.
    assert psnr(sr[None], hr[None], crop_border=4) == m["psnr"]


def test_grey_images_use_their_only_channel(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    g_sr, g_hr = sr[:1], hr[:1]
    assert psnr(g_sr, g_hr, y_channel=True) == psnr(g_sr, g_hr)
    assert ssim(g_sr, g_hr, y_channel=True) == ssim(g_sr, g_hr)


def test_bad_input(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    with pytest.raises(ValueError):
        psnr(sr, hr[:, :-1])
    with pytest.raises(ValueError):
        ssim(sr[:, :10, :10], hr[:, :10, :10])
    with pytest.raises(ValueError):
        psnr(torch.stack([sr, hr]), torch.stack([hr, hr]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    cpu = image_metrics(sr, hr, crop_border=4)
    gpu = image_metrics(sr.cuda(), hr.cuda(), crop_border=4)
    for k in cpu:
        assert gpu[k] == pytest.approx(cpu[k], abs=1e-10)
