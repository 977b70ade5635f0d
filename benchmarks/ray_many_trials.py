"""A real local Ray Tune study of many trivial trials through the study's callback and results
writer: does the driver finish with every row, and how much memory does it hold? Run by hand
(not in the suite; minutes):

    python benchmarks/ray_many_trials.py [--trials 1000] [--concurrency 2] [--keep DIR] [--nice 10]

Each trial is a function trainable that reports 3 times (an evaluation with per-image rows on
the last) and returns; the trials' specs are the platform's own (``TrialSpec`` payloads of the
default experiment config in a grid), so the callback records the same columns a real study
does. Printed: wall time, rows in ``trials.parquet``, curve and per-image rows, and the
driver's peak RSS (this process: Ray's workers and raylet are other processes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

OBJECTIVE = "eval.Set5.psnr_y"


def trivial_trainable(config: dict) -> None:
    from ray import tune

    seed = config["trial"]["seed"]
    lr = config["trial"]["params"]["optim.lr"]
    for it in (1, 2, 3):
        out = {"iteration": it, "loss.total": 0.1 / it, "lr": lr, "time_per_step": 0.001}
        if it == 3:
            psnr = 30 + 1e3 * lr + 0.01 * seed
            out[OBJECTIVE] = psnr
            out["per_image"] = json.dumps([{"iteration": it, "set": "Set5", "image": f"im{k}.png",
                                            "psnr_y": psnr + 0.1 * k} for k in range(5)])
        tune.report(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--nice", type=int, default=10, help="the driver's niceness once Ray has started")
    args = ap.parse_args()

    import ray
    from ray import tune

    from resweep.config import ExperimentConfig
    from resweep.study.callback import StudyCallback
    from resweep.study.layout import read_parquet
    from resweep.study.results import StudyResults, count_statuses, read_trials
    from resweep.study.trial_spec import TrialSpec
    from resweep.trainables.runtime import init_ray

    base = ExperimentConfig().to_dict()
    base["train"]["iterations"] = 3
    payloads = []
    for i in range(args.trials):
        lr = 1e-4 * (1 + i // 2)
        exp = json.loads(json.dumps(base))
        exp["optim"]["lr"] = lr
        exp["train"]["seed"] = i % 2
        payloads.append(TrialSpec(label="", seed=i % 2, params={"optim.lr": lr}, experiment=exp,
                                  group=f"g{i // 2:05d}").to_payload())
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        study = root / "study"
        meta = {"name": "many", "knobs": ["optim.lr"], "seeds": [0, 1], "variants": [],
                "objectives": [{"metric": OBJECTIVE, "mode": "max"}], "iterations": 3,
                "total_trials": args.trials, "task": {"kind": "sr", "scale": 2}}
        StudyResults(study, meta=meta).write_meta()
        callback = StudyCallback(study_dir=study, name="many", objective=OBJECTIVE, mode="max",
                                 total_trials=args.trials, quiet=True)
        init_ray(num_cpus=args.concurrency, dashboard=False, quiet=True)
        # Ray's raylet must register within 30 s: on a loaded machine start this script at normal
        # priority; the driver (this process, the part measured) then steps back
        os.nice(args.nice)
        t0 = time.perf_counter()
        tuner = tune.Tuner(
            trivial_trainable,
            param_space={"trial": tune.grid_search(payloads)},
            tune_config=tune.TuneConfig(max_concurrent_trials=args.concurrency, reuse_actors=True),
            run_config=tune.RunConfig(name="tune", storage_path=str((root / "ray").resolve()),
                                      callbacks=[callback], verbose=0),
        )
        tuner.fit()
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ray.shutdown()
        rows = read_trials(study)
        counts = count_statuses(rows)
        curves = read_parquet(study / "curves.parquet").num_rows
        per_image = read_parquet(study / "per_image.parquet").num_rows
        parts = sorted(p.name for p in (study / "trials.parquet").iterdir())
    print(f"trials: {args.trials}, concurrency {args.concurrency}: wall {wall:.1f} s "
          f"({1000 * wall / args.trials:.0f} ms/trial); driver peak RSS {peak:.0f} MiB")
    print(f"trials.parquet rows: {len(rows)} ({counts['finished']} finished); curve rows {curves}; "
          f"per-image rows {per_image}; trials.parquet parts after the end: {parts}")
    return 0 if len(rows) == args.trials and counts["finished"] == args.trials else 1


if __name__ == "__main__":
    raise SystemExit(main())
