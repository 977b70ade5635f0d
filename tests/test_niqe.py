"""NIQE: MATLAB golden value, a per-block scalar reference, behaviour, evaluation and direction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import gamma as gamma_fn
from skimage import data as skdata

from resweep.config import ExperimentConfig
from resweep.data.datasets import EvalItem, EvalSet
from resweep.degradations.tasks import build_task
from resweep.engine.evaluate import Evaluator
from resweep.errors import ConfigError
from resweep.metrics.directions import metric_direction
from resweep.metrics.niqe import _block_features, _half_size, niqe, niqe_y, pristine_model

from conftest import shared_dataset

MATLAB_BABOON_492 = 5.72957338  # MATLAB R2021a niqe(), /work/shared/reference/README.md
# MATLAB rgb2gray weights derived here, independently of the module: the first row of the inverse
# of the NTSC (YIQ) matrix, as rgb2gray.m computes them
_GRAY_WEIGHTS = np.linalg.inv(np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]]))[0]


def _load_png(path) -> torch.Tensor:
    from PIL import Image

    array = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1).double() / 255.0


def test_golden_value_matches_matlab():
    image = _load_png(shared_dataset("CSet14") / "baboon.png")[:, :, :492]
    assert image.shape[-2:] == (480, 492)
    # 1.0e-5 here (the float64 pipeline of before was 3.9e-4 off); the margin covers a BLAS that
    # rounds the float32 resize differently (up to ~7e-5 on this image)
    assert niqe(image) == pytest.approx(MATLAB_BABOON_492, abs=1e-4)


def test_gray_conversion_is_matlab_rgb2gray():
    rgb = _load_png(shared_dataset("CSet14") / "baboon.png")[:, :, :492]
    counts = np.rint(rgb.numpy() * 255.0)
    grey = np.floor(np.tensordot(_GRAY_WEIGHTS, counts, axes=1) + 0.5)  # uint8 cast: half away
    assert niqe(rgb, convert_to="gray") == pytest.approx(niqe_y(grey), abs=1e-12)
    # a different luminance: NIQE sees the ~1% of pixels that land on another integer
    assert abs(niqe(rgb, convert_to="gray") - niqe(rgb)) > 1e-3
    with pytest.raises(ValueError, match="convert_to"):
        niqe(rgb, convert_to="grey")  # type: ignore[arg-type]


def test_half_size_is_matlab_imresize_in_float32():
    from resweep.degradations.imresize import imresize

    image = np.rint(np.random.default_rng(1).uniform(0, 255, (96, 192))).astype(np.float32)
    want = imresize(torch.from_numpy(image.astype(np.float64) / 255.0)[None], scale=0.5)[0].numpy() * 255.0
    got = _half_size(image)
    assert got.dtype == np.float32 and got.shape == (48, 96)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)  # float32 rounding on 0..255


# ---- an independent scalar reference: the release's estimateaggdparam / computefeature, one
# block at a time, written from the MATLAB text (not the vectorised code under test)
def _ref_aggd(vec: np.ndarray) -> tuple[float, float, float]:
    gam = np.arange(0.2, 10.0005, 0.001)
    r_gam = gamma_fn(2 / gam) ** 2 / (gamma_fn(1 / gam) * gamma_fn(3 / gam))
    left = math.sqrt(np.mean(vec[vec < 0] ** 2))
    right = math.sqrt(np.mean(vec[vec > 0] ** 2))
    g = left / right
    rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
    rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = gam[int(np.argmin((r_gam - rnorm) ** 2))]
    f = math.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left * f, right * f


def _ref_features(block: np.ndarray) -> list[float]:
    a, bl, br = _ref_aggd(block.ravel())
    feat = [a, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shifted = np.roll(block, shift, axis=(0, 1))
        a, bl, br = _ref_aggd((block * shifted).ravel())
        feat += [a, (br - bl) * gamma_fn(2 / a) / gamma_fn(1 / a), bl, br]
    return feat


def test_block_features_match_scalar_reference():
    rng = np.random.default_rng(0)
    # MSCN-like coefficients: skewed, heavy-tailed, correlated with a neighbour
    base = rng.laplace(size=(3, 24, 24)) + 0.3 * rng.standard_normal((3, 24, 24)) ** 2 - 0.3
    blocks = base + 0.5 * np.roll(base, 1, axis=2)
    got = _block_features(blocks)
    want = np.array([_ref_features(b) for b in blocks])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_pristine_model_is_package_data():
    mu, cov, window = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36) and window.shape == (7, 7)
    np.testing.assert_allclose(cov, cov.T)
    assert window.sum() == pytest.approx(1.0)


def test_noise_and_blur_raise_niqe():
    clean = torch.from_numpy(skdata.astronaut()[:288, :288]).permute(2, 0, 1).double() / 255
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * 0.1).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(clean[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    q_clean, q_noisy, q_blur = niqe(clean), niqe(noisy), niqe(blurred)
    assert q_noisy > q_clean + 1.0
    assert q_blur > q_clean + 1.0


def test_grey_input_and_y_input_agree():
    grey = torch.from_numpy(skdata.camera()[:192, :288]).double()[None] / 255
    assert niqe(grey) == pytest.approx(niqe_y(torch.round(grey[0] * 255)), abs=1e-12)


def test_too_small_image_is_a_clear_error():
    with pytest.raises(ValueError, match="at least two 96x96 blocks"):
        niqe(torch.rand(3, 100, 150))


def test_lower_is_better_everywhere():
    from resweep.analysis.tables import better as table_better
    from resweep.study.results import better as objective_better

    for better in (metric_direction, table_better, objective_better):
        assert better("eval.CSet14.niqe") == "min"
        assert better("niqe_baseline") == "min"
        assert better("eval.Set5.psnr_y") == "max"
        assert better("ssim") == "max"
        assert better("eval.Set5.psnr_y", "min") == "min"


def test_niqe_is_opt_in_per_eval_set_and_round_trips():
    cfg = ExperimentConfig.from_dict(
        {"eval": {"sets": [{"kind": "demo", "split": "eval", "niqe": True}, {"kind": "demo"}]}}
    )
    assert [s.niqe for s in cfg.eval.sets] == [True, False]
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert [s.niqe for s in again.eval.sets] == [True, False]
    with pytest.raises(ConfigError, match="evaluation option"):
        ExperimentConfig.from_dict({"data": {"train": {"kind": "demo", "niqe": True}}})
    grey = ExperimentConfig.from_dict({"eval": {"sets": [{"kind": "demo", "niqe": "gray"}, {"kind": "demo", "niqe": "y"}]}})
    assert [s.niqe for s in ExperimentConfig.from_dict(grey.to_dict()).eval.sets] == ["gray", "y"]
    for wrong in ("grey", "yes", 1):
        with pytest.raises(ConfigError, match="niqe must be true, false, 'y' or 'gray'"):
            ExperimentConfig.from_dict({"eval": {"sets": [{"kind": "demo", "niqe": wrong}]}})


def test_evaluator_stores_niqe_per_image_only_where_asked():
    task = build_task(ExperimentConfig().task.model_copy(update={"kind": "sr", "scale": 2}))
    gt = torch.from_numpy(skdata.astronaut()[:200, :296]).permute(2, 0, 1).float() / 255
    lq = task.degrade(gt, torch.Generator().manual_seed(0))
    with_niqe = EvalSet("A", [EvalItem("astro.png", lq, gt)])
    without = EvalSet("B", [EvalItem("astro.png", lq, gt)])
    grey = EvalSet("C", [EvalItem("astro.png", lq, gt)])
    evaluator = Evaluator([with_niqe, without, grey], task, crop_border=2, device=torch.device("cpu"),
                          niqe_sets=[True, False, "gray"])

    class Upsample(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    result = evaluator.evaluate(Upsample(), iteration=3)
    by_set = {r["set"]: r for r in result.per_image}
    pred = Upsample()(lq[None])[0].clamp(0, 1)
    assert by_set["A"]["niqe"] == pytest.approx(niqe(pred, crop_border=2), abs=1e-9)
    baseline = task.baseline(lq[None])[0].clamp(0, 1)
    assert by_set["A"]["niqe_baseline"] == pytest.approx(niqe(baseline, crop_border=2), abs=1e-9)
    assert result.means["eval.A.niqe"] == by_set["A"]["niqe"]
    assert by_set["C"]["niqe"] == pytest.approx(niqe(pred, crop_border=2, convert_to="gray"), abs=1e-9)
    assert by_set["C"]["niqe"] != by_set["A"]["niqe"]
    assert "niqe" not in by_set["B"] and "eval.B.niqe" not in result.means


def test_evaluator_names_the_image_when_too_small_for_niqe():
    task = build_task(ExperimentConfig().task.model_copy(update={"kind": "sr", "scale": 2}))
    gt = torch.rand(3, 64, 64)
    small = EvalSet("tiny", [EvalItem("x.png", task.degrade(gt, torch.Generator().manual_seed(0)), gt)])
    with pytest.raises(ValueError, match="eval set 'tiny', image 'x.png'"):
        Evaluator([small], task, crop_border=2, device=torch.device("cpu"), niqe_sets=[True])
