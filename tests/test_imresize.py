"""MATLAB-compatible bicubic imresize: checks against references independent of the code.

References used here, none of them derived from ``resweep.degradations.imresize``:

1. ``_ref_imresize``: a float64, loop-per-output-sample port of MATLAB's documented
   algorithm (imresize.m, ``contributions``/``cubic``/``resizeAlongDim``), written
   scalar-style for readability rather than speed.
2. Numbers printed by MATLAB itself and published on the web (see the tests' comments).
3. Analytic facts: constants are preserved, linear ramps (and, when upscaling,
   quadratics) are reproduced exactly away from the borders, and the x1/2 antialiased
   kernel has the dyadic taps [-3, -9, 29, 111, 111, 29, -9, -3] / 256.
4. torch.nn.functional.interpolate and PIL, only to show they are measurably different.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data as skdata

from resweep.degradations import bicubic_downsample, bicubic_upsample, imresize

# --------------------------------------------------------------------------------------
# Independent float64 reference, one output sample at a time.
# --------------------------------------------------------------------------------------


def _ref_cubic(t: float) -> float:
    """Keys (1981) cubic convolution kernel, a = -0.5 (MATLAB's ``cubic``)."""
    a = abs(t)
    if a <= 1.0:
        return 1.5 * a**3 - 2.5 * a**2 + 1.0
    if a <= 2.0:
        return -0.5 * a**3 + 2.5 * a**2 - 4.0 * a + 2.0
    return 0.0


def _ref_source_index(k: int, n: int, padding: str) -> int:
    """1-based, possibly out-of-range tap -> 0-based input row."""
    if padding == "replicate":
        return min(max(k, 1), n) - 1
    # Symmetric padding: reflect about the half-pixel borders until inside
    # (... 2 1 | 1 2 ... n | n n-1 ...).
    while k < 1 or k > n:
        k = 1 - k if k < 1 else 2 * n + 1 - k
    return k - 1


def _ref_resize_rows(a: np.ndarray, out_len: int, scale: float, padding: str) -> np.ndarray:
    """Resize axis 0 of ``a`` the MATLAB way (bicubic, antialiasing on)."""
    n = a.shape[0]
    stretched = scale < 1.0
    width = 4.0 / scale if stretched else 4.0
    out = np.zeros((out_len,) + a.shape[1:], dtype=np.float64)
    for i in range(1, out_len + 1):
        centre = i / scale + 0.5 * (1.0 - 1.0 / scale)
        first = math.floor(centre - width / 2.0)
        taps = []
        for k in range(first, first + math.ceil(width) + 2):
            dist = centre - k
            w = scale * _ref_cubic(scale * dist) if stretched else _ref_cubic(dist)
            taps.append((k, w))
        total = sum(w for _, w in taps)
        acc = np.zeros(a.shape[1:], dtype=np.float64)
        for k, w in taps:
            acc += (w / total) * a[_ref_source_index(k, n, padding)]
        out[i - 1] = acc
    return out


def _ref_imresize(
    img: np.ndarray,
    scale: float | None = None,
    out_hw: tuple[int, int] | None = None,
    padding: str = "symmetric",
) -> np.ndarray:
    """(C,H,W) float64 -> resized, MATLAB ``imresize(img, scale | [h w])``."""
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape[-2:]
    if scale is not None:
        sh = sw = scale
        oh, ow = math.ceil(scale * h), math.ceil(scale * w)
    else:
        assert out_hw is not None
        oh, ow = out_hw
        sh, sw = oh / h, ow / w
    x = np.moveaxis(img, (-2, -1), (0, 1))  # (H, W, C)
    # MATLAB resizes the dimension with the smaller scale first (rows on a tie).
    if sh <= sw:
        x = _ref_resize_rows(x, oh, sh, padding)
        x = np.swapaxes(_ref_resize_rows(np.swapaxes(x, 0, 1), ow, sw, padding), 0, 1)
    else:
        x = np.swapaxes(_ref_resize_rows(np.swapaxes(x, 0, 1), ow, sw, padding), 0, 1)
        x = _ref_resize_rows(x, oh, sh, padding)
    return np.moveaxis(x, (0, 1), (-2, -1))


def _photo(name: str) -> np.ndarray:
    """scikit-image bundled photo as (3,H,W) float64 in [0, 1]."""
    return getattr(skdata, name)().astype(np.float64).transpose(2, 0, 1) / 255.0


PHOTOS = ("astronaut", "chelsea", "coffee")
SCALES = (1 / 2, 1 / 3, 1 / 4, 1 / 8, 2.0, 3.0, 4.0)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: _photo(name) for name in PHOTOS}


# --------------------------------------------------------------------------------------
# Agreement with the loop reference on real photographs.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"x{s:.3g}")
def test_matches_reference_on_photos(photos: dict[str, np.ndarray], scale: float) -> None:
    for name, full in photos.items():
        # Upscaling: a crop (odd width) keeps the scalar reference fast; the full photos
        # are covered by downscaling here and by the numbers in the report.
        img = full if scale < 1 else full[:, :150, :201]
        ref = _ref_imresize(img, scale=scale)
        out64 = imresize(torch.from_numpy(img), scale=scale)
        out32 = imresize(torch.from_numpy(img).float(), scale=scale)
        assert out64.dtype == torch.float64 and out32.dtype == torch.float32
        assert out64.shape == ref.shape, name
        err64 = np.abs(out64.numpy() - ref).max()
        err32 = np.abs(out32.double().numpy() - ref).max()
        # float64: only summation order differs; float32: input and arithmetic rounding.
        assert err64 < 1e-12, (name, err64)
        assert err32 < 3e-6, (name, err32)


def test_output_size_and_nonuniform_scales(photos: dict[str, np.ndarray]) -> None:
    img = photos["chelsea"][:, :64, :75]  # odd width
    # ceil(scale * size), as MATLAB.
    assert imresize(torch.from_numpy(img), scale=1 / 3).shape[-2:] == (22, 25)
    assert imresize(torch.from_numpy(img), scale=0.37).shape[-2:] == (24, 28)
    for out_hw in [(32, 150), (128, 30), (17, 75), (64, 40)]:
        ref = _ref_imresize(img, out_hw=out_hw)
        out = imresize(torch.from_numpy(img), output_size=out_hw)
        assert out.shape[-2:] == out_hw
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# Numbers printed by MATLAB (published). Old releases clamped out-of-range indices
# (replicate); current ones mirror them (symmetric). Away from the borders both agree.
# --------------------------------------------------------------------------------------

# https://stackoverflow.com/questions/17380407 (June 2013):
#   >> M = [0 0 1 1 0]; imresize(M, [1, size(M,2)*2])
MATLAB_2013_ROW = np.array(
    [0, -0.0234, -0.0703, 0.2031, 0.7969, 1.0938, 1.0938, 0.7969, 0.2031, -0.0703]
)

# https://www.mathworks.com/matlabcentral/answers/1628 (Feb 2011):
#   >> A = [3,1,2,6;1,5,2,7;1,3,6,2;4,1,9,2]; imresize(A, size(A)*2, 'bicubic')
MATLAB_2011_A = np.array([[3, 1, 2, 6], [1, 5, 2, 7], [1, 3, 6, 2], [4, 1, 9, 2]], dtype=float)
MATLAB_2011_OUT = np.array(
    [
        [3.3109, 2.6187, 1.1206, 0.7166, 1.4067, 2.8883, 5.1615, 6.2060],
        [2.6454, 2.4435, 2.0052, 1.7138, 1.5692, 2.8062, 5.4248, 6.6307],
        [1.2008, 2.0609, 3.9181, 3.8763, 1.9355, 2.6382, 5.9844, 7.5302],
        [0.4985, 1.6796, 4.2357, 4.6921, 3.0489, 3.2618, 5.3307, 6.2876],
        [0.5384, 1.2996, 2.9579, 4.1612, 4.9094, 4.6769, 3.4639, 2.9028],
        [1.5500, 1.6768, 1.9697, 3.5367, 6.3776, 6.1378, 2.8173, 1.2798],
        [3.5334, 2.8110, 1.2710, 2.8185, 7.4537, 7.6444, 3.3907, 1.4186],
        [4.4466, 3.3344, 0.9529, 2.4891, 7.9430, 8.3334, 3.6605, 1.4930],
    ]
)
PRINT_TOL = 0.5e-4 + 1e-9  # MATLAB's "format short" prints 4 decimals


def test_published_matlab_row() -> None:
    m = torch.tensor([[[0, 0, 1, 1, 0]]], dtype=torch.float64)
    old = imresize(m, output_size=(1, 10), padding="replicate")[0, 0].numpy()
    np.testing.assert_allclose(old, MATLAB_2013_ROW, rtol=0, atol=PRINT_TOL)
    new = imresize(m, output_size=(1, 10))[0, 0].numpy()
    np.testing.assert_allclose(new[:9], MATLAB_2013_ROW[:9], rtol=0, atol=PRINT_TOL)
    # Last sample: tap 7 (weight cubic(1.75) = -3/128) mirrors to sample 4 (= 1) instead
    # of being clamped to sample 5 (= 0): -9/128 - 3/128.
    assert new[9] == pytest.approx(-0.09375, abs=1e-15)
    # The loop reference agrees with both variants.
    np.testing.assert_allclose(_ref_imresize(m.numpy(), out_hw=(1, 10))[0, 0], new, atol=1e-15)
    ref_old = _ref_imresize(m.numpy(), out_hw=(1, 10), padding="replicate")[0, 0]
    np.testing.assert_allclose(ref_old, old, atol=1e-15)


def test_published_matlab_matrix() -> None:
    a = torch.from_numpy(MATLAB_2011_A)[None]
    old = imresize(a, scale=2, padding="replicate")[0].numpy()
    np.testing.assert_allclose(old, MATLAB_2011_OUT, rtol=0, atol=PRINT_TOL)
    new = imresize(a, scale=2)[0].numpy()
    # Outputs 2..7 never reach beyond one sample outside the image, where clamping and
    # mirroring coincide; outputs 1 and 8 use the tap two samples out.
    np.testing.assert_allclose(new[1:-1, 1:-1], MATLAB_2011_OUT[1:-1, 1:-1], atol=PRINT_TOL)
    assert np.abs(new[0] - MATLAB_2011_OUT[0]).max() > 0.05
    np.testing.assert_allclose(new, _ref_imresize(MATLAB_2011_A[None], scale=2)[0], atol=1e-13)


# --------------------------------------------------------------------------------------
# Analytic facts.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.37, 1.0, 1.7, 2.0, 4.0])
def test_constant_image_is_preserved(scale: float) -> None:
    img = torch.full((2, 3, 19, 23), 0.3712, dtype=torch.float64)
    out = imresize(img, scale=scale)
    torch.testing.assert_close(out, torch.full_like(out, 0.3712), rtol=0, atol=1e-14)


def test_half_scale_kernel_taps() -> None:
    # imresize(., 0.5) with antialiasing filters with cubic(x/2)/2, sampled at the
    # half-integers +-0.5, +-1.5, +-2.5, +-3.5 and normalised:
    # cubic(0.25) = 111/128, cubic(0.75) = 29/128, cubic(1.25) = -9/128,
    # cubic(1.75) = -3/128 -> taps [-3, -9, 29, 111, 111, 29, -9, -3] / 256.
    n = 32
    eye = torch.eye(n, dtype=torch.float64)[None]  # rows: unit impulses
    mat = imresize(eye, output_size=(n, n // 2))[0].T  # (out, in) matrix of the operator
    taps = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256
    for j in range(2, n // 2 - 2):  # outputs whose support lies inside the image
        row = mat[j].numpy()
        np.testing.assert_allclose(row[2 * j - 3 : 2 * j + 5], taps, rtol=0, atol=1e-16)
        assert np.count_nonzero(row) == 8


def test_ramps_and_quadratics_in_the_interior() -> None:
    k = torch.arange(1, 65, dtype=torch.float64)  # sample k sits at position k (1-based)
    ramp = k.expand(1, 1, 64)
    # x2 up: output i sits at u = i/2 + 1/4. Keys' kernel reproduces polynomials up to
    # degree 2 exactly (a = -0.5 only), so away from the borders ramp -> u, k^2 -> u^2.
    u_up = torch.arange(1, 129, dtype=torch.float64) / 2 + 0.25
    up = imresize(ramp, output_size=(1, 128))[0, 0]
    torch.testing.assert_close(up[4:-4], u_up[4:-4], rtol=0, atol=1e-12)
    up2 = imresize((k**2).expand(1, 1, 64), output_size=(1, 128))[0, 0]
    torch.testing.assert_close(up2[4:-4], u_up[4:-4] ** 2, rtol=0, atol=1e-10)
    # x1/2 down: output i covers samples 2i-1, 2i, centre u = 2i - 1/2; the symmetric
    # kernel reproduces the ramp exactly where it does not touch the border.
    u_down = 2 * torch.arange(1, 33, dtype=torch.float64) - 0.5
    down = imresize(ramp, output_size=(1, 32))[0, 0]
    torch.testing.assert_close(down[2:-2], u_down[2:-2], rtol=0, atol=1e-12)
    # x1/4 down: centre u = 4i - 3/2.
    down4 = imresize(ramp, output_size=(1, 16))[0, 0]
    u_down4 = 4 * torch.arange(1, 17, dtype=torch.float64) - 1.5
    torch.testing.assert_close(down4[2:-2], u_down4[2:-2], rtol=0, atol=1e-12)


def test_linear_batched_and_differentiable() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 20, generator=gen, dtype=torch.float64)
    y = torch.rand(2, 3, 24, 20, generator=gen, dtype=torch.float64)
    d = lambda t: imresize(t, scale=1 / 4)  # noqa: E731
    torch.testing.assert_close(d(0.3 * x - 1.7 * y), 0.3 * d(x) - 1.7 * d(y), rtol=0, atol=1e-13)
    # Batched == per-image (C,H,W).
    torch.testing.assert_close(d(x)[1], d(x[1]), rtol=0, atol=0)
    # No clamping inside: values outside [0, 1] pass through linearly.
    torch.testing.assert_close(d(x + 5.0), d(x) + 5.0, rtol=0, atol=1e-12)
    small = torch.rand(1, 1, 8, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=0.5), (small,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=3), (small,))


def test_convenience_wrappers(photos: dict[str, np.ndarray]) -> None:
    hr = torch.from_numpy(photos["astronaut"][:, :96, :120]).float()
    lr = bicubic_downsample(hr, 4)
    assert lr.shape == (3, 24, 30) and lr.dtype == torch.float32
    torch.testing.assert_close(lr, imresize(hr, scale=0.25), rtol=0, atol=0)
    up = bicubic_upsample(lr, 4)
    assert up.shape == hr.shape
    torch.testing.assert_close(up, imresize(lr, scale=4), rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple"):
        bicubic_downsample(hr[:, :95], 4)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        imresize(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), scale=0.5)
    with pytest.raises(ValueError):
        imresize(torch.zeros(8, 8), scale=0.5)


# --------------------------------------------------------------------------------------
# The usual substitutes are *not* MATLAB's imresize (the SR literature's convention).
# --------------------------------------------------------------------------------------


def _psnr01(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def _pil_bicubic(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    pil_image = pytest.importorskip("PIL.Image")
    return np.stack(
        [
            np.asarray(
                pil_image.fromarray(ch.astype(np.float32), mode="F").resize(
                    (out_hw[1], out_hw[0]), pil_image.Resampling.BICUBIC
                )
            )
            for ch in img
        ]
    ).astype(np.float64)


def _torch_bicubic(img: np.ndarray, out_hw: tuple[int, int], antialias: bool) -> np.ndarray:
    t = torch.from_numpy(img)[None]
    return torch.nn.functional.interpolate(
        t, size=out_hw, mode="bicubic", antialias=antialias, align_corners=False
    )[0].numpy()


def test_torch_interpolate_and_pil_differ(photos: dict[str, np.ndarray]) -> None:
    img = photos["astronaut"]  # 512 x 512
    # x1/4 (size divisible by 4). torch's antialiased bicubic is PIL's filter (a = -0.5,
    # stretched support), which matches MATLAB's in the interior here, but it renormalises
    # the truncated kernel at the borders instead of mirroring: up to ~12/255 there.
    ref = _ref_imresize(img, scale=0.25)
    ours = imresize(torch.from_numpy(img), scale=0.25).numpy()
    assert _psnr01(ours, ref) > 200  # identical up to float64 rounding
    out_hw = (ref.shape[1], ref.shape[2])
    for other in (_torch_bicubic(img, out_hw, antialias=True), _pil_bicubic(img, out_hw)):
        assert np.abs(other - ref).max() > 5 / 255
        assert _psnr01(other, ref) < 62
    # Without antialiasing torch uses a = -0.75 and no low-pass: far off everywhere.
    assert _psnr01(_torch_bicubic(img, out_hw, antialias=False), ref) < 40
    # x1/3 of 512: MATLAB keeps scale = 1/3 exactly (output ceil(512/3) = 171), torch/PIL
    # use 512/171, so the whole sampling grid shifts: ~31 dB.
    ref3 = _ref_imresize(img, scale=1 / 3)
    out_hw3 = (ref3.shape[1], ref3.shape[2])
    for other in (_torch_bicubic(img, out_hw3, antialias=True), _pil_bicubic(img, out_hw3)):
        assert _psnr01(other, ref3) < 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference(photos: dict[str, np.ndarray]) -> None:
    img = photos["coffee"]
    for scale in (1 / 4, 3.0):
        ref = _ref_imresize(img, scale=scale)
        out = imresize(torch.from_numpy(img).float().cuda(), scale=scale)
        assert out.device.type == "cuda"
        assert np.abs(out.double().cpu().numpy() - ref).max() < 3e-6
