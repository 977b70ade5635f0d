"""Step cost of fp32 loss networks (the default) vs the bf16 opt-in, side by side, per method.

    python benchmarks/bench_loss_precision.py [--device cpu|cuda|auto] [--batch 16] [--repeats 5]
                                              [--methods perceptual spn mae_loss rcl]

Under ``train.amp`` the engine runs every method's ``loss_terms`` with autocast off (VGG,
MAE encoder, RCL's encoder and distances in fp32) unless the method sets
``loss_precision: bf16``; SPN also runs the model's forward in fp32 (``needs_fp32_forward``).
Each variant is the Trainer's own ``training_step`` plus the optimiser step on one fixed
batch: ``perceptual`` (EDSR-baseline x2, VGG-19 relu2_2/3_3/4_3), ``spn`` (EDSR-baseline x2,
K = 4, VGG-16), ``mae_loss`` (EDSR-baseline x2, CTMAE with the small ViT, pretrained for one
step: same cost) and ``rcl`` (U-Net, Bhattacharyya, ResNet-50 consistency encoder). Feature
networks are random (same cost as the real weights).

Timing: the two variants of a method alternate round-robin; on CUDA the median wall time per
step after synchronising, on CPU the median CPU time of this process. On CPU ``train.amp`` is
ignored by the engine, so the fp32 default changes nothing there; ``--cpu-autocast`` turns on
CPU bf16 autocast to exercise the same code path (its timings say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.config import ExperimentConfig  # noqa: E402
from resweep.engine.trainer import Trainer  # noqa: E402

SR = {"task": {"kind": "sr", "scale": 2}, "model": {"name": "edsr_baseline"}}
METHODS: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {
    # name: (experiment keys, method knobs, LR patch side)
    "perceptual": (SR, {"allow_random_features": True}, 48),
    "spn": (SR, {"allow_random_features": True}, 48),
    "mae_loss": (SR, {"variant": "ctmae", "pretrain": {"arch": "small", "steps": 1, "batch_size": 2,
                                                       "crop": 96, "data": {"kind": "demo", "split": "all"}}}, 48),
    "rcl": ({"task": {"kind": "hetero_denoise", "scale": 1}, "model": {"name": "unet"}},
            {"distance": "bhattacharyya", "allow_random_features": True}, 64),
}


def build(name: str, precision: str, args: argparse.Namespace, cache: Path) -> tuple[Trainer, dict[str, torch.Tensor]]:
    experiment, knobs, patch = METHODS[name]
    config = ExperimentConfig.from_dict({
        **experiment,
        "data": {"train": {"kind": "demo", "split": "train"}, "patch_size": patch, "batch_size": args.batch},
        "train": {"device": args.device, "amp": True},
        "methods": {name: {**knobs, "loss_precision": precision}},
    })
    trainer = Trainer(config, cache_dir=cache, log=lambda _m: None)
    if trainer.device.type == "cpu" and args.cpu_autocast:
        trainer.autocast = True
    g = torch.Generator().manual_seed(0)
    scale = config.scale
    batch = {"lq": torch.rand(args.batch, 3, patch, patch, generator=g),
             "gt": torch.rand(args.batch, 3, patch * scale, patch * scale, generator=g)}
    return trainer, {k: v.to(trainer.device) for k, v in batch.items()}


def step(trainer: Trainer, batch: dict[str, torch.Tensor]) -> None:
    trainer.training_step(dict(batch))
    trainer.optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--cpu-autocast", action="store_true", help="CPU bf16 autocast (see above)")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="bench-loss-precision-"))
    print(f"batch {args.batch}, median of {args.repeats} steps after 1 warm-up")
    print(f"{'method':<12}{'fp32 (default)':>16}{'bf16 opt-in':>14}{'fp32 / bf16':>13}")
    for name in args.methods:
        variants = {p: build(name, p, args, cache) for p in ("fp32", "bf16")}
        device = next(iter(variants.values()))[0].device
        cuda = device.type == "cuda"
        times: dict[str, list[float]] = {p: [] for p in variants}
        for r in range(args.repeats + 1):
            for precision, (trainer, batch) in variants.items():
                if cuda:
                    torch.cuda.synchronize(device)
                start = time.perf_counter() if cuda else time.process_time()
                step(trainer, batch)
                if cuda:
                    torch.cuda.synchronize(device)
                if r:  # the first round is a warm-up
                    times[precision].append((time.perf_counter() if cuda else time.process_time()) - start)
        fp32, bf16 = (statistics.median(times[p]) for p in ("fp32", "bf16"))
        print(f"{name:<12}{fp32 * 1e3:>13.0f} ms{bf16 * 1e3:>11.0f} ms{fp32 / bf16:>13.2f}")
        del variants
    print(f"device: {device}{' (CPU bf16 autocast)' if device.type == 'cpu' and args.cpu_autocast else ''}")


if __name__ == "__main__":
    main()
