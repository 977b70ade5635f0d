"""RCL's baselines: Noise2Noise (two independent draws, same parameters) and Noise2Self (J-invariance)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from resweep.config import ExperimentConfig, TaskConfig
from resweep.degradations.tasks import build_task
from resweep.errors import ConfigError
from resweep.methods import MethodContext, World
from resweep.methods.noise2noise import Noise2Noise, Noise2NoiseConfig, two_noisy_draws
from resweep.methods.noise2self import (
    MASK_KEY,
    Noise2Self,
    Noise2SelfConfig,
    donut_mean,
    grid_mask,
    masked_input,
)
from resweep.models import create_model
from tests.conftest import tiny_config_dict


def _experiment(**overrides) -> ExperimentConfig:
    return ExperimentConfig.from_dict(tiny_config_dict(**{
        "task": {"kind": "hetero_denoise", "scale": 1, "shot_noise_range": [0.0, 0.01],
                 "read_noise_range": [0.0, 0.004]},
        "model.name": "unet_tiny", "data.patch_size": 16, "data.batch_size": 2, **overrides,
    }))


# --------------------------------------------------------------------------- Noise2Noise
def test_noise2noise_draws_are_independent_with_the_same_parameters():
    task = build_task(TaskConfig(kind="hetero_denoise", scale=1, quantize_input=False,
                                 shot_noise_range=(0.0, 0.02), read_noise_range=(0.0, 0.01)))
    clean = torch.full((3, 96, 96), 0.5, dtype=torch.float64)
    ratios, variances, correlations = [], [], []
    for seed in range(8):
        first, second = two_noisy_draws(task, clean, torch.Generator().manual_seed(seed))
        n1, n2 = (first - clean).flatten(), (second - clean).flatten()
        # the parameters the draws used, re-drawn from the same generator state
        shot, read = task.sample_lambdas(1, torch.Generator().manual_seed(seed))
        expected = float(shot[0]) * 0.5 + float(read[0])
        assert n1.var().item() == pytest.approx(expected, rel=0.06)
        assert n2.var().item() == pytest.approx(expected, rel=0.06)
        ratios.append(n1.var().item() / n2.var().item())
        variances.append(expected)
        correlations.append(torch.corrcoef(torch.stack([n1, n2]))[0, 1].item())
    # same parameters: the two draws' variances agree image by image, while images differ a lot
    assert max(variances) / min(variances) > 3
    assert all(abs(r - 1) < 0.08 for r in ratios)
    # independent: correlation within ~4 standard errors of 0 (27648 samples -> se 0.006)
    assert all(abs(c) < 0.025 for c in correlations)


def test_noise2noise_training_samples_hold_two_noisy_draws_and_no_clean_image(tmp_path):
    from resweep.engine.trainer import Trainer

    exp = _experiment(**{"train.iterations": 2, "eval.every": 2, "methods": {"noise2noise": {}}})
    trainer = Trainer(exp, cache_dir=tmp_path, log=lambda _m: None)
    sample = trainer.dataset[(1, 9)]
    assert "gt" not in sample and set(sample) >= {"lq", "noisy_target"}
    assert not torch.equal(sample["lq"], sample["noisy_target"])
    assert torch.equal(trainer.dataset[(1, 9)]["noisy_target"], sample["noisy_target"])  # keyed
    assert trainer.fit().status == "finished"


def test_noise2noise_refuses_tasks_it_cannot_simulate():
    exp = ExperimentConfig.from_dict(tiny_config_dict())  # sr x2
    context = MethodContext(config=exp, model=create_model("edsr_tiny", scale=2),
                            task=build_task(exp.task), world=World(), cache_dir=Path("."))
    with pytest.raises(ConfigError, match="pure denoising task"):
        Noise2Noise(Noise2NoiseConfig(), context)


# --------------------------------------------------------------------------- Noise2Self
def test_grid_mask_covers_every_pixel_once_over_the_phases_and_donut_excludes_the_centre():
    total = sum(grid_mask((7, 8), 3, p) for p in range(9))
    assert torch.equal(total, torch.ones(1, 1, 7, 8))
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 8.0
    d = donut_mean(x)
    assert d[0, 0, 2, 2] == 0  # the centre itself is excluded
    assert d[0, 0, 1, 1] == 1 and d[0, 0, 3, 2] == 1  # each neighbour sees it with weight 1/8


def _n2s(exp: ExperimentConfig | None = None) -> Noise2Self:
    exp = exp or _experiment()
    return Noise2Self(Noise2SelfConfig(), MethodContext(
        config=exp, model=create_model("unet_tiny"), task=build_task(exp.task), world=World(),
        cache_dir=Path(".")))


def test_noise2self_is_j_invariant_numerically():
    torch.manual_seed(0)
    model = create_model("unet_tiny").double()
    n2s = _n2s()
    noisy = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    batch = n2s.transform_batch({"lq": noisy}, iteration=5)
    mask = batch[MASK_KEY].bool().expand_as(noisy)
    # 1) changing the masked pixels' own values leaves the network input bit-identical
    changed = noisy.clone()
    changed[mask] = torch.rand(int(mask.sum()), dtype=torch.float64)
    assert torch.equal(n2s.transform_batch({"lq": changed}, iteration=5)["lq"], batch["lq"])
    # 2) the prediction at masked pixels has zero derivative w.r.t. their own values ...
    x = noisy.clone().requires_grad_()
    pred = model(masked_input(x, batch[MASK_KEY]))
    (grad,) = torch.autograd.grad(pred[mask].sum(), x)
    assert grad[mask].abs().max().item() == 0.0
    assert grad[~mask].abs().max().item() > 0  # ... but it does depend on the other pixels
    # ... whereas the unmasked network does depend on them (the check can fail)
    x2 = noisy.clone().requires_grad_()
    (grad_plain,) = torch.autograd.grad(model(x2)[mask].sum(), x2)
    assert grad_plain[mask].abs().max().item() > 0
    # 3) the loss counts masked pixels only: unmasked prediction errors do not change it
    pred = model(batch["lq"]).detach()
    base = n2s.loss_terms(pred, batch, 5)["noise2self"]
    bumped = pred.clone()
    bumped[~mask] += 1.0
    assert torch.equal(n2s.loss_terms(bumped, batch, 5)["noise2self"], base)
    want = ((pred - noisy)[mask] ** 2).mean()
    assert base.item() == pytest.approx(want.item(), rel=1e-6)  # the loss runs in float32


def test_noise2self_trains_without_clean_images(tmp_path):
    from resweep.engine.trainer import Trainer

    exp = _experiment(**{"train.iterations": 2, "eval.every": 2, "methods": {"noise2self": {}}})
    trainer = Trainer(exp, cache_dir=tmp_path, log=lambda _m: None)
    assert "gt" not in trainer.dataset[(0, 1)]
    outcome = trainer.fit()
    assert outcome.status == "finished" and math.isfinite(outcome.metrics["eval.demo-eval.psnr"])
    with pytest.raises(ConfigError, match="task.scale must be 1"):
        _n2s(ExperimentConfig.from_dict(tiny_config_dict(**{"model.name": "unet_tiny"})))
