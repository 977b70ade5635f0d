"""Training-core overheads, side by side in one run.

Prints: step time in a plain process vs 1 Ray Train worker vs 2 Ray Train workers (DDP/gloo),
and the time from `resweep train` start (driver side, Ray start included) to the first step.

    python benchmarks/bench_train.py [--model edsr_baseline] [--iterations 30] [--patch 48] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from resweep.config import ExperimentConfig
from resweep.engine.trainer import Trainer


def config(args: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "name": "bench",
            "task": {"kind": "sr", "scale": 2},
            "model": {"name": args.model},
            "data": {"train": {"kind": "demo", "split": "train"}, "patch_size": args.patch, "batch_size": args.batch},
            "train": {"iterations": args.iterations, "log_every": 5, "seed": 0},
            "eval": {"every": args.iterations, "max_side": 32, "sets": [{"kind": "demo", "split": "eval"}]},
        }
    )


class _Steps:
    def __init__(self):
        self.reports = []

    def report(self, metrics, checkpoint):
        self.reports.append(metrics)


def steady_step_time(reports: list[dict]) -> float:
    # skip the first window: it holds warm-up (allocator, first-touch, thread pools)
    values = [r["time_per_step"] for r in reports if "time_per_step" in r][1:]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="edsr_tiny")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config(args)

    rows = []
    steps = _Steps()
    t0 = time.time()
    trainer = Trainer(cfg, reporter=steps, log=lambda _m: None, started_at=t0)
    trainer.fit()
    rows.append(("plain process", steady_step_time(steps.reports), trainer.startup_seconds))

    from resweep.trainables.train import run_training

    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_training(cfg, output_dir=Path(tmp), workers=workers, quiet=True, cpus_per_worker=1)
            curves = pq.read_table(Path(tmp) / "curves.parquet").to_pylist()
            rows.append((f"Ray Train, {workers} worker(s)", steady_step_time(curves), curves[0].get("startup_seconds")))
            assert summary.status == "finished", summary

    base = rows[0][1]
    print(f"\nmodel {args.model}, x2, LR patch {args.patch}, global batch {args.batch}, {args.iterations} iterations, "
          f"{args.threads} torch thread(s)/worker, {torch.get_num_threads()} here")
    print(f"{'setting':28s} {'step time':>12s} {'vs plain':>9s} {'start -> first step':>20s}")
    for name, step, startup in rows:
        print(f"{name:28s} {step * 1000:10.1f}ms {step / base:8.2f}x {startup:18.1f} s")
    print("\n(plain process: start = Trainer construction; Ray rows: start = run_training() call, "
          "Ray start-up and worker group creation included. With 2 workers each rank does half the batch.)")


if __name__ == "__main__":
    main()
