"""How fast candidate demo networks learn: PSNR-Y gain over bicubic vs training steps.

The demo must beat bicubic by a clear margin within a few minutes of a 2-core CPU; this prints,
for each candidate trained side by side in one process with the same data, batch, patch and
learning rate (the demo's), the gain over bicubic on the demo evaluation set at each evaluation
and the time per step. Numbers behind resweep/presets/demo.yaml.

    python benchmarks/bench_demo.py [--iterations 300] [--every 75] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from resweep.config import ExperimentConfig
from resweep.engine.trainer import Trainer

CANDIDATES = ("sr_residual_tiny", "edsr_tiny")
SET = "demo-eval"


def run(model: str, args: argparse.Namespace) -> list[tuple[int, float, float]]:
    """[(iteration, gain over bicubic in dB, ms per step)] of one training run."""
    config = ExperimentConfig.from_dict({
        "name": f"bench-{model}", "task": {"kind": "sr", "scale": 2}, "model": {"name": model},
        "data": {"train": {"kind": "demo", "split": "train"}, "patch_size": 32, "batch_size": 16},
        "optim": {"name": "adam", "lr": args.lr}, "schedule": {"kind": "cosine"},
        "train": {"iterations": args.iterations, "log_every": args.every, "seed": args.seed},
        "eval": {"every": args.every, "max_side": args.max_side, "sets": [{"kind": "demo", "split": "eval"}]},
    })
    points: list[tuple[int, float, float]] = []

    class Collect:
        def report(self, metrics, checkpoint) -> None:
            if f"eval.{SET}.psnr_y" in metrics:
                gain = metrics[f"eval.{SET}.psnr_y"] - metrics[f"eval.{SET}.psnr_y_baseline"]
                points.append((metrics["iteration"], gain, 1000 * metrics["time_per_step"]))

    Trainer(config, reporter=Collect(), log=lambda _msg: None).fit()
    return points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--every", type=int, default=75)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="a demo trial gets one CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for model in CANDIDATES:
        started = time.perf_counter()
        results[model] = run(model, args)
        print(f"{model}: {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\nPSNR-Y gain over bicubic on {SET} (dB), x2, batch 16, patch 32, Adam {args.lr:g}, "
          f"{args.threads} thread(s); ms/step in brackets")
    print(f"{'iteration':>9}  " + "  ".join(f"{m:>24}" for m in CANDIDATES))
    for i, (iteration, *_rest) in enumerate(results[CANDIDATES[0]]):
        cells = [f"{results[m][i][1]:+.2f} dB [{results[m][i][2]:.0f} ms]" for m in CANDIDATES]
        print(f"{iteration:>9}  " + "  ".join(f"{c:>24}" for c in cells))
    base, other = (results[m][-1] for m in CANDIDATES)
    print(f"\nstep-time ratio {CANDIDATES[1]} / {CANDIDATES[0]}: {other[2] / base[2]:.2f}")


if __name__ == "__main__":
    main()
