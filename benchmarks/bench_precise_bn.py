"""Cost of precise BN (``eval.precise_bn_batches``) against one training step, side by side.

    python benchmarks/bench_precise_bn.py [--batch 8] [--patch 32] [--bn-patches 32 128] [--rounds 3]

For each BatchNorm model (fastdvdnet_tiny on 5-frame windows, dncnn_tiny on images): the median
time of one training step (forward, backward, Adam) at the training patch, and of one precise-BN
pass (the engine's default 32 batches, forward only) at each precise-BN crop size. A pass runs
once per evaluation, so its cost is to be read against ``eval.every`` training steps. Rounds
alternate the measurements so load from other processes hits them alike.

Measured 2026-11-23 on the 2-core project machine (lightly loaded), batch 8, training patch 32:

    fastdvdnet_tiny: step 141 ms; pass over 32 px crops 2.1 s (= 15 steps), 128 px 26.7 s (= 189)
    dncnn_tiny:      step  22 ms; pass over 32 px crops 0.3 s (= 13 steps), 128 px  6.5 s (= 297)

A pass costs about as many steps as (crop / patch)^2 x batches / 3: at the training crop it is
lost in any eval.every of a few hundred steps; at 4x the crop, lower eval.precise_bn_batches.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from resweep.config_sections import DEFAULT_PRECISE_BN_BATCHES
from resweep.engine.precise_bn import recompute_batchnorm_stats
from resweep.models import create_model

MODELS = {"fastdvdnet_tiny": 3 * 5 + 1, "dncnn_tiny": 3}  # name -> input channels


def _step_seconds(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model.train()
    loss = (model(x) - x[:, :3]).abs().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def _pass_seconds(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    recompute_batchnorm_stats(model, batches)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=32, help="training patch")
    parser.add_argument("--bn-patches", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--batches", type=int, default=DEFAULT_PRECISE_BN_BATCHES)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"batch {args.batch}, training patch {args.patch}, precise BN over {args.batches} batches; "
          f"one thread, median of {args.rounds} rounds")
    for name, channels in MODELS.items():
        model = create_model(name, scale=1)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.rand(args.batch, channels, args.patch, args.patch)
        bn_inputs = {p: [torch.rand(args.batch, channels, p, p) for _ in range(args.batches)] for p in args.bn_patches}
        steps: list[float] = []
        passes: dict[int, list[float]] = {p: [] for p in args.bn_patches}
        _step_seconds(model, opt, x)  # warm-up
        for _ in range(args.rounds):
            steps.append(statistics.median(_step_seconds(model, opt, x) for _ in range(5)))
            for p, batches in bn_inputs.items():
                passes[p].append(_pass_seconds(model, batches))
        step = statistics.median(steps)
        print(f"  {name}: training step {step * 1000:.1f} ms")
        for p, times in passes.items():
            t = statistics.median(times)
            print(f"    precise BN pass, {p:4d} px crops: {t:7.2f} s = {t / step:6.1f} training steps")


if __name__ == "__main__":
    main()
