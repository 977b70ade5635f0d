"""JDenSR (`hetero_denoise_sr`): the heteroscedastic noise of `hetero_denoise` after x2 downsampling."""

from __future__ import annotations

import pytest
import torch

from resweep.config import ExperimentConfig, TaskConfig
from resweep.degradations.imresize import bicubic_downsample
from resweep.degradations.tasks import build_task
from tests.conftest import tiny_config_dict


def test_jdensr_is_downsampling_then_the_same_noise_draws():
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    jdensr = build_task(TaskConfig(kind="hetero_denoise_sr", scale=2, quantize_input=False))
    denoise = build_task(TaskConfig(kind="hetero_denoise", scale=1, quantize_input=False))
    got = jdensr.degrade(hr, torch.Generator().manual_seed(7))
    lr = bicubic_downsample(hr, 2)
    want = denoise.degrade(lr, torch.Generator().manual_seed(7))
    assert got.shape == (2, 3, 8, 8)
    assert torch.equal(got, want)
    assert not torch.allclose(got, lr, atol=1e-3)  # there is noise
    assert jdensr.baseline(got).shape == hr.shape  # the bicubic reference at GT size


def test_jdensr_noise_variance_follows_the_lr_signal():
    # fixed lambdas (low == high): the empirical variance of (lq - lr) must be shot*lr + read
    shot, read = 0.004, 0.001
    cfg = TaskConfig(kind="hetero_denoise_sr", scale=2, quantize_input=False,
                     shot_noise_range=(shot, shot), read_noise_range=(read, read))
    task = build_task(cfg)
    hr = torch.cat([torch.full((1, 3, 128, 128), 0.1), torch.full((1, 3, 128, 128), 0.9)])
    lq = task.degrade(hr, torch.Generator().manual_seed(1))
    noise = lq - bicubic_downsample(hr, 2)
    for i, level in enumerate((0.1, 0.9)):
        var = noise[i].double().var().item()
        assert var == pytest.approx(shot * level + read, rel=0.08)


def test_jdensr_config_needs_an_sr_scale_and_trains_through_the_data_pipeline():
    with pytest.raises(Exception, match="scale in 2, 3, 4, 8"):
        TaskConfig(kind="hetero_denoise_sr", scale=1)
    exp = ExperimentConfig.from_dict(tiny_config_dict(**{"task": {"kind": "hetero_denoise_sr", "scale": 2}}))
    from resweep.data import build_train_dataset

    sample = build_train_dataset(exp, build_task(exp.task))[(0, 3)]
    assert sample["lq"].shape == (3, 12, 12) and sample["gt"].shape == (3, 24, 24)
