"""Costs of the MAE-as-a-loss study, side by side in one run.

    python benchmarks/bench_mae.py niqe [--repeats 5]
    python benchmarks/bench_mae.py steps [--device cpu|cuda|auto] [--batch 4] [--repeats 5]

``niqe``: time per 512x512 RGB image of NIQE next to the full-reference metrics the evaluator
always computes (PSNR/SSIM, RGB and Y, ``image_metrics``), alternated round-robin; the ratio
says what ``eval.sets[i].niqe: true`` adds to an evaluation.

``steps``: one training step (forward, loss, backward, Adam) of the restoration network with
the pixel loss only ("Original"), + CTMAE, + CCMAE (whole image and patch versions) and + VGG
(``perceptual``), alternated round-robin. On CPU the cost is the median CPU time of this process
per step (robust to other processes on a shared machine), on CUDA the median wall time; ratios
are to Original. Loss networks are randomly initialised (same cost as trained ones).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def _cpu_or_wall(device: torch.device) -> Callable[[], float]:
    return time.perf_counter if device.type == "cuda" else time.process_time


def bench_niqe(args: argparse.Namespace) -> None:
    from skimage import data as skdata

    from resweep.metrics import image_metrics
    from resweep.metrics.niqe import niqe

    rgb = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).double() / 255  # 512x512
    noisy = (rgb + 0.05 * torch.randn(rgb.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    jobs = {
        "niqe": lambda: niqe(noisy),
        "psnr+ssim (rgb, y)": lambda: image_metrics(noisy, rgb),
    }
    for job in jobs.values():  # warm caches (shape grid, imresize taps)
        job()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    wall: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            job()
            times[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    ref = statistics.median(times["psnr+ssim (rgb, y)"])
    print(f"512x512 RGB image, {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"{'metric':<22}{'cpu ms (median)':>16}{'wall ms (median)':>18}{'x psnr+ssim':>13}")
    for name in jobs:
        cpu = statistics.median(times[name])
        print(f"{name:<22}{cpu * 1e3:>16.1f}{statistics.median(wall[name]) * 1e3:>18.1f}{cpu / ref:>13.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["niqe", "steps"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    args = parser.parse_args(argv)
    if args.part == "niqe":
        bench_niqe(args)
    else:
        bench_steps(args)


def bench_steps(args: argparse.Namespace) -> None:
    raise SystemExit("steps: not written yet")


if __name__ == "__main__":
    main()
