"""Study-layer overheads, side by side in one run on this machine.

Prints: time from trial start to the first training step with the in-process trial path vs the
nested TorchTrainer path; trials per hour for N small trials run concurrently vs one at a time.

    python benchmarks/bench_study.py [--trials 4] [--iterations 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from resweep.study.spec import study_from_dict


def make_study(name: str, trials: int, iterations: int, *, in_process: bool, concurrent: int):
    return study_from_dict(
        {
            "name": name,
            "base": {
                "task": {"kind": "sr", "scale": 2},
                "model": {"name": "edsr_tiny"},
                "data": {"train": {"kind": "demo", "split": "train"}, "patch_size": 16, "batch_size": 4},
                "train": {"iterations": iterations, "log_every": 5},
                "eval": {"every": iterations, "max_side": 32, "sets": [{"kind": "demo", "split": "eval"}]},
            },
            "space": {"optim.lr": {"type": "grid", "values": [1e-3 / (i + 1) for i in range(trials)]}},
            "objectives": [{"metric": "eval.demo-eval.psnr_y", "mode": "max"}],
            "resources": {"workers": 1, "cpus_per_worker": 1, "in_process": in_process},
            "budget": {"max_concurrent": concurrent},
        }
    )


def run(study, root: Path) -> tuple[float, list[float]]:
    from resweep.study import run_study

    start = time.perf_counter()
    study_dir = run_study(study, study_dir=root / study.name, quiet=True)
    wall = time.perf_counter() - start
    curves = pq.read_table(study_dir / "curves.parquet").to_pandas()
    startup = curves.sort_values("iteration").groupby("trial_id")["startup_seconds"].first().tolist()
    return wall, startup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    from resweep.trainables.runtime import init_ray

    init_ray(num_cpus=2)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, in_process, concurrent in (
            ("inproc-concurrent", True, 2),
            ("torchtrainer-concurrent", False, 2),
            ("inproc-sequential", True, 1),
        ):
            results[name] = run(make_study(name, args.trials, args.iterations, in_process=in_process, concurrent=concurrent), root)

    print(f"\n{args.trials} trials of edsr_tiny x2, {args.iterations} iterations each, on {2} CPUs")
    a, c = results["inproc-concurrent"][1], results["torchtrainer-concurrent"][1]
    print(f"{'trial start -> first step':32s} {'median':>8s} {'min':>7s} {'max':>7s}")
    for name, values in (("in-process trial", a), ("nested TorchTrainer", c)):
        print(f"{name:32s} {statistics.median(values):7.1f}s {min(values):6.1f}s {max(values):6.1f}s")
    print(f"TorchTrainer / in-process: {statistics.median(c) / statistics.median(a):.1f}x")
    print(f"\n{'throughput':32s} {'wall':>8s} {'trials/hour':>12s}")
    for name in ("inproc-concurrent", "inproc-sequential", "torchtrainer-concurrent"):
        wall = results[name][0]
        print(f"{name:32s} {wall:7.1f}s {args.trials / wall * 3600:11.0f}")
    ratio = results["inproc-sequential"][0] / results["inproc-concurrent"][0]
    print(f"concurrent (2 at a time) vs one at a time: {ratio:.2f}x the trials per hour")


if __name__ == "__main__":
    main()
