"""Precise BatchNorm: recomputed running statistics against float64 references, the
engine's use of it before evaluation, and the collapse it exists to prevent."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from resweep.config import ExperimentConfig
from resweep.config_sections import DEFAULT_PRECISE_BN_BATCHES
from resweep.data import build_train_dataset
from resweep.degradations.tasks import build_task
from resweep.degradations.video_denoise import unpack_window
from resweep.engine.precise_bn import batchnorm_layers, recompute_batchnorm_stats
from resweep.engine.sampler import batch_keys
from resweep.engine.trainer import Trainer
from resweep.models import create_model
from tests.conftest import tiny_config_dict


def _reference_stats(model: nn.Module, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Second implementation: a float64 copy run batch by batch with its BN layers normalising
    by batch statistics; every BN input kept, then mean and unbiased var of the concatenation."""
    ref = copy.deepcopy(model).double().eval()
    layers = batchnorm_layers(ref)
    seen: list[list[torch.Tensor]] = [[] for _ in layers]
    hooks = [
        bn.register_forward_pre_hook(lambda _m, inp, i=i: seen[i].append(inp[0].detach().clone()))
        for i, bn in enumerate(layers)
    ]
    for bn in layers:
        bn.train()
    with torch.no_grad():
        for batch in batches:
            ref(batch.double())
    for h in hooks:
        h.remove()
    stats = []
    for inputs in seen:
        x = torch.cat(inputs).transpose(0, 1).reshape(inputs[0].shape[1], -1)
        stats.append((x.mean(dim=1), x.var(dim=1, unbiased=True)))
    return stats


class _TwoBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5),
            nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _batches(n: int, seed: int, shift: float = 0.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(4, 3, 10, 12, generator=g) * 3.0 + shift for _ in range(n)]


def test_single_layer_stats_are_the_population_moments():
    bn = nn.BatchNorm2d(3)
    batches = _batches(5, seed=0, shift=2.0)
    assert recompute_batchnorm_stats(bn, batches) == 5
    x = torch.cat(batches).double().transpose(0, 1).reshape(3, -1)
    # the formula: mean and unbiased variance over every sample and pixel of every batch
    n = x.shape[1]
    mean = x.sum(dim=1) / n
    var = ((x - mean[:, None]) ** 2).sum(dim=1) / (n - 1)
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-6, atol=1e-6)
    assert bn.training  # flags restored


def test_stacked_layers_match_a_float64_second_implementation_and_flags_are_restored():
    torch.manual_seed(0)
    model = _TwoBN()
    model.body[3].train()  # a mixed state the call must give back as it found it
    model.body[1].eval()
    flags = [m.training for m in model.modules()]
    batches = _batches(6, seed=1)
    recompute_batchnorm_stats(model, batches)
    assert [m.training for m in model.modules()] == flags
    layers = batchnorm_layers(model)
    for bn, (mean, var) in zip(layers, _reference_stats(model, batches), strict=True):
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)
    # dropout was off during the pass: a second call gives the same statistics exactly
    first = [bn.running_var.clone() for bn in layers]
    recompute_batchnorm_stats(model, batches)
    for bn, before in zip(layers, first, strict=True):
        torch.testing.assert_close(bn.running_var, before, rtol=0, atol=0)


def test_no_batches_is_an_error_and_a_model_without_batchnorm_is_left_alone():
    with pytest.raises(ValueError, match="at least one batch"):
        recompute_batchnorm_stats(_TwoBN(), [])
    plain = nn.Conv2d(3, 3, 3)
    assert recompute_batchnorm_stats(plain, _batches(2, seed=0)) == 0


def test_stale_running_stats_wreck_evaluation_and_recomputing_them_repairs_it():
    """The defect seen in the FastDVDnet proxy run: running statistics that belong to other
    weights. Here the initial ones (mean 0, var 1) against inputs far from that."""
    torch.manual_seed(0)
    model = create_model("fastdvdnet_tiny", scale=1)
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(4, 16, 24, 24, generator=g) * 4.0 + 1.0 for _ in range(6)]
    probe = torch.rand(4, 16, 24, 24, generator=g) * 4.0 + 1.0
    centre = unpack_window(probe, 5)[0][:, 2]  # the output is this frame minus a residual

    def residual_error(out: torch.Tensor, reference: torch.Tensor) -> float:
        return float((out - reference).abs().mean() / (reference - centre).abs().mean())

    with torch.no_grad():
        model.train()
        batch_stats_out = model(probe)  # what the network computes with its batch statistics
        model.eval()
        stale = residual_error(model(probe), batch_stats_out)
        recompute_batchnorm_stats(model, batches)
        precise = residual_error(model(probe), batch_stats_out)
    assert not model.training
    assert stale > 0.2, f"the stale statistics should be visibly wrong here (relative error {stale:.3f})"
    assert precise < stale / 10, f"relative error {stale:.3f} -> {precise:.3f}"


# --------------------------------------------------------------------------- data parallel
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranked_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = _TwoBN()
        batches = _batches(6, seed=1)[rank::world]  # each rank its own share
        recompute_batchnorm_stats(model, batches, dist.all_reduce)
        torch.save({k: v for k, v in model.state_dict().items() if "running" in k}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ranks_sum_their_statistics_and_end_identical_to_one_process_over_all_batches(tmp_path):
    out = str(tmp_path / "stats")
    mp.spawn(_ranked_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    torch.manual_seed(0)
    single = _TwoBN()
    recompute_batchnorm_stats(single, _batches(6, seed=1))
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        for name, value in got.items():
            torch.testing.assert_close(value, single.state_dict()[name], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- engine
def _denoise_config(**changes) -> ExperimentConfig:
    data = tiny_config_dict(**{"task": {"kind": "denoise", "scale": 1, "noise_sigma": 25}, "model.name": "dncnn_tiny"})
    data["train"].update(iterations=4, log_every=1)
    data["eval"].update(every=2)
    for key, value in changes.items():
        data["eval"][key] = value
    return ExperimentConfig.from_dict(data)


def test_default_is_on_for_batchnorm_models_only_and_zero_turns_it_off():
    assert Trainer(_denoise_config(), log=lambda _m: None).precise_bn.batches == DEFAULT_PRECISE_BN_BATCHES
    assert Trainer(_denoise_config(precise_bn_batches=0), log=lambda _m: None).precise_bn.batches == 0
    sr = ExperimentConfig.from_dict(tiny_config_dict())
    assert not batchnorm_layers(create_model("edsr_tiny", scale=2))
    assert Trainer(sr, log=lambda _m: None).precise_bn.batches == 0


@pytest.mark.parametrize("patch_size", [None, 20])
def test_trainer_evaluates_with_statistics_of_the_next_training_batches(reporter, patch_size):
    cfg = _denoise_config(precise_bn_batches=3, precise_bn_patch_size=patch_size)
    lines: list[str] = []
    trainer = Trainer(cfg, reporter=reporter, log=lines.append)
    trainer.fit()
    said = [line for line in lines if "precise BN" in line]
    assert len(said) == 1 and f"({patch_size or cfg.data.patch_size} px crops)" in said[0]  # once, not per evaluation
    # independently: the batches the sampler gives for the 3 iterations after the last one,
    # from the training data cropped to the precise-BN size
    data = cfg.data.model_copy(update={"patch_size": patch_size or cfg.data.patch_size})
    dataset = build_train_dataset(cfg.model_copy(update={"data": data}), build_task(cfg.task))
    end = cfg.train.iterations
    batches = []
    for it in range(end, end + 3):
        keys = batch_keys(cfg.train.seed, it, 0, cfg.data.batch_size, 1, len(dataset))
        batches.append(torch.stack([dataset[k]["lq"] for k in keys]))
    assert batches[0].shape[-1] == (patch_size or cfg.data.patch_size)
    for bn, (mean, var) in zip(batchnorm_layers(trainer.model), _reference_stats(trainer.model, batches), strict=True):
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-5)
    assert reporter.reports[-1]["status"] == "finished"
