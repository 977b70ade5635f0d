"""Degradation tasks: shapes, noise statistics, reproducibility, crop/margin consistency."""

from __future__ import annotations

import pytest
import torch

from resweep.config import TaskConfig
from resweep.degradations.imresize import bicubic_downsample, bicubic_upsample
from resweep.degradations.tasks import TASKS, build_task, quantize_8bit
from resweep.errors import RegistryError

torch.set_num_threads(1)


def _image(h: int, w: int, seed: int = 0, batch: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (3, h, w) if batch is None else (batch, 3, h, w)
    # Smooth-ish content plus texture, in [0, 1].
    base = torch.rand(shape, generator=g)
    return (
        0.5 * base
        + 0.5
        * torch.nn.functional.avg_pool2d(
            base.reshape(-1, 1, h, w), 5, stride=1, padding=2, count_include_pad=False
        ).reshape(shape)
    ).clamp(0, 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_has_every_config_kind() -> None:
    assert set(TASKS.names()) == {
        "sr", "denoise", "hetero_denoise", "denoise_sr", "realworld_sr", "hetero_denoise_sr", "video_denoise"
    }
    with pytest.raises(RegistryError, match="Did you mean"):
        TASKS.get("sr_x")


@pytest.mark.parametrize(
    "kind,scale",
    [
        ("sr", 2),
        ("sr", 3),
        ("denoise", 1),
        ("hetero_denoise", 1),
        ("denoise_sr", 4),
        ("realworld_sr", 2),
    ],
)
def test_shapes_baseline_and_quantisation(kind: str, scale: int) -> None:
    task = build_task(TaskConfig(kind=kind, scale=scale))
    hr = _image(24, 36)
    lq = task.degrade(hr, _gen(0))
    assert lq.shape == (3, 24 // scale, 36 // scale) and lq.dtype == torch.float32
    # quantize_input (the default): values on the 8-bit grid, inside [0, 1]
    assert lq.min() >= 0 and lq.max() <= 1
    assert torch.equal(lq, torch.round(lq * 255) / 255)
    base = task.baseline(lq)
    assert base.shape == hr.shape
    if scale == 1:
        assert torch.equal(base, lq)
    else:
        assert torch.allclose(base, bicubic_upsample(lq, scale).clamp(0, 1))
    # batched input
    lq_b = task.degrade(_image(24, 36, batch=2), _gen(0))
    assert lq_b.shape == (2, 3, 24 // scale, 36 // scale)
    assert task.is_deterministic == (kind == "sr")


def test_sr_is_matlab_bicubic_and_rejects_non_multiple_sizes() -> None:
    task = build_task(TaskConfig(kind="sr", scale=3, quantize_input=False))
    hr = _image(30, 33)
    assert torch.equal(task.degrade(hr, _gen(0)), bicubic_downsample(hr, 3))
    assert task.context_margin == 6
    with pytest.raises(ValueError, match="multiple of scale"):
        task.degrade(_image(31, 33), _gen(0))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_crop_with_margin_equals_crop_of_full_degradation(scale: int) -> None:
    task = build_task(TaskConfig(kind="sr", scale=scale, quantize_input=False))
    m = task.context_margin
    assert m % scale == 0
    hr = _image(40 * scale, 36 * scale, seed=scale)
    full = task.degrade(hr, _gen(0))
    p = 7
    # interior crops, crops touching each border (margin clipped) and the corner
    for top, left in [(10, 12), (0, 5), (33, 29), (0, 0), (40 - p, 36 - p), (1, 1)]:
        y0, x0 = max(0, top * scale - m), max(0, left * scale - m)
        y1 = min(hr.shape[1], (top + p) * scale + m)
        x1 = min(hr.shape[2], (left + p) * scale + m)
        lq_region = task.degrade(hr[:, y0:y1, x0:x1], _gen(0))
        oy, ox = (top * scale - y0) // scale, (left * scale - x0) // scale
        patch = lq_region[:, oy : oy + p, ox : ox + p]
        expected = full[:, top : top + p, left : left + p]
        assert (patch - expected).abs().max() < 1e-6, (top, left)
    # without the margin the patch borders are wrong: the margin is needed, not decorative
    top, left = 10, 12
    no_margin = task.degrade(
        hr[:, top * scale : (top + p) * scale, left * scale : (left + p) * scale], _gen(0)
    )
    assert (no_margin - full[:, top : top + p, left : left + p]).abs().max() > 1e-3


def test_gaussian_noise_std_matches_sigma() -> None:
    sigma = 25.0
    task = build_task(TaskConfig(kind="denoise", scale=1, noise_sigma=sigma, quantize_input=False))
    hr = torch.full((3, 96, 96), 0.5)
    noise = task.degrade(hr, _gen(1)) - hr  # 27648 samples: std of the estimate ~0.4%
    assert abs(noise.mean().item()) < 0.03 * sigma / 255
    assert noise.std().item() == pytest.approx(sigma / 255, rel=0.03)
    # colour noise of realworld_sr: channels independent (not one grey field copied)
    rw = build_task(
        TaskConfig(kind="realworld_sr", scale=2, noise_sigma=sigma, quantize_input=False)
    )
    hr2 = torch.full((3, 96, 96), 0.5)
    n2 = rw.degrade(hr2, _gen(2)) - bicubic_downsample(hr2, 2)
    assert n2.std().item() == pytest.approx(sigma / 255, rel=0.05)
    corr = torch.corrcoef(n2.reshape(3, -1))
    assert corr[0, 1].abs() < 0.05 and corr[1, 2].abs() < 0.05


def test_noise_is_reproducible_from_the_generator() -> None:
    for kind in ("denoise", "hetero_denoise", "denoise_sr"):
        scale = 2 if kind == "denoise_sr" else 1
        task = build_task(TaskConfig(kind=kind, scale=scale, shot_noise_range=(0.001, 0.01)))
        hr = _image(16, 16)
        a, b, c = (task.degrade(hr, _gen(s)) for s in (7, 7, 8))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_heteroscedastic_variance_is_shot_times_signal_plus_read() -> None:
    shot, read = 0.01, 0.0005
    task = build_task(
        TaskConfig(
            kind="hetero_denoise",
            scale=1,
            shot_noise_range=(shot, shot),
            read_noise_range=(read, read),
            quantize_input=False,
        )
    )
    levels = torch.linspace(0.05, 0.95, 10)
    hr = levels.view(1, 10, 1, 1).expand(3, 10, 64, 64).reshape(3, 640, 64)  # 10 flat bands
    noise = (task.degrade(hr, _gen(3)) - hr).reshape(3, 10, 64, 64)
    var = noise.transpose(0, 1).reshape(10, -1).var(dim=1)
    # least-squares line var = a * y + b
    design = torch.stack([levels, torch.ones_like(levels)], dim=1).double()
    a, b = torch.linalg.lstsq(design, var.double().unsqueeze(1)).solution.squeeze(1).tolist()
    assert a == pytest.approx(shot, rel=0.08)
    assert b == pytest.approx(read, abs=0.15 * (shot * 0.5 + read))


def test_heteroscedastic_lambdas_are_drawn_per_image_in_range() -> None:
    cfg = TaskConfig(
        kind="hetero_denoise",
        scale=1,
        shot_noise_range=(0.0, 0.0),
        read_noise_range=(0.0005, 0.004),
        quantize_input=False,
    )
    task = build_task(cfg)
    hr = torch.full((6, 3, 48, 48), 0.5)
    var = (task.degrade(hr, _gen(4)) - hr).reshape(6, -1).var(dim=1)
    assert var.min() > 0.0005 * 0.9 and var.max() < 0.004 * 1.1
    assert var.max() / var.min() > 1.2  # different images, different noise levels
    shots, reads = task.sample_lambdas(1000, _gen(5))
    assert shots.eq(0).all() and reads.min() >= 0.0005 and reads.max() <= 0.004


def test_quantize_8bit_clamps_and_rounds() -> None:
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 0.3, 1.4])
    q = quantize_8bit(x)
    assert q.min() == 0 and q.max() == 1
    assert torch.equal(q * 255, torch.round(q * 255))
