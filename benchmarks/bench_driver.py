"""The driver's bookkeeping cost per trial vs the size of the study (no training, no Ray run).

    python benchmarks/bench_driver.py [--sizes 100 1000 10000] [--window 100] [--concurrency 8]

For each size N, in a fresh process:

1. *fill*: a study folder with N - window ended trials, written by the real results writer
   (``StudyResults``) with its flushes held back until one final flush, so filling is fast;
2. *resume*: a real ``StudyCallback`` is set up on that folder (what a resumed driver does:
   the old layout reloaded every row, curve and per-image row here) -- timed;
3. *window*: the last ``window`` trials go through the callback exactly as Tune drives it
   (``on_trial_start``, reports with evaluations and per-image rows, ``on_step_end`` between
   events, ``on_trial_complete``), ``concurrency`` trials at a time -- timed per trial;
4. ``on_experiment_end`` (the final compaction, if any) -- timed.

Printed per size: the per-trial cost of the window (wall and CPU ms: the marginal cost of one
more trial in a study of N), the resume and end times, and the driver's peak RSS. Steps 2-4
run ``--repeats`` times in rounds over the sizes, each on a fresh copy of the filled folder
(the best run is shown). The
machine may be shared: compare the sizes' ratios, taken in one run (the CPU ratio is the one
that other processes disturb least).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

REPORTS = 10  # per trial; every 5th is an evaluation
SETS = {"Set5": 5, "Set14": 14}
OBJECTIVE = "eval.Set5.psnr_y"
ITERATIONS = 100


def _experiment() -> dict:
    from resweep.config import ExperimentConfig

    return ExperimentConfig().to_dict()


def _spec_payload(i: int, experiment: dict) -> dict:
    from resweep.study.trial_spec import TrialSpec

    params = {"optim.lr": 10 ** (-3 - (i % 7) / 3), "methods.spn.alpha": (i // 7) % 5 * 0.1,
              "model.channels": [32, 64][i % 2]}
    exp = json.loads(json.dumps(experiment))
    exp.setdefault("train", {})["iterations"] = ITERATIONS
    return TrialSpec(label="", seed=i % 3, params=params, experiment=exp, group=f"g{i // 3:05d}").to_payload()


def _report(i: int, r: int) -> dict:
    it = (r + 1) * ITERATIONS // REPORTS
    out = {"iteration": it, "loss.total": 0.1 / (r + 1) + i * 1e-6, "lr": 1e-3, "time_per_step": 0.01,
           "training_iteration": r + 1, "time_total_s": float(r + 1), "status": "running"}
    if (r + 1) % 5 == 0:
        rows = []
        for s, n in SETS.items():
            psnr = 28 + (i % 11) * 0.1 + r * 0.01
            out[f"eval.{s}.psnr_y"] = psnr
            out[f"eval.{s}.ssim_y"] = 0.8
            rows += [{"iteration": it, "set": s, "image": f"img{k:02d}.png", "psnr": psnr + k * 0.01,
                      "ssim": 0.8, "psnr_y": psnr + 1, "ssim_y": 0.81} for k in range(n)]
        out["per_image"] = json.dumps(rows)
    if r == REPORTS - 1:
        out["status"] = "finished"
    return out


def _trial(i: int, experiment: dict) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"bench_{i:06d}", config={"trial": _spec_payload(i, experiment)},
                           last_result=None, local_path="/nonexistent")


def _drive(callback, trials: list[SimpleNamespace], concurrency: int) -> None:
    """Tune's event order for ``trials``, ``concurrency`` at a time, reports interleaved."""
    pending = list(trials)
    running: dict[str, list] = {}
    while pending or running:
        while pending and len(running) < concurrency:
            t = pending.pop(0)
            callback.on_trial_start(iteration=0, trials=[], trial=t)
            running[t.trial_id] = [t, 0]
            callback.on_step_end(iteration=0, trials=[])
        for tid, state in list(running.items()):
            t, r = state
            result = _report(int(tid.split("_")[1]), r)
            t.last_result = result
            callback.on_trial_result(iteration=0, trials=[], trial=t, result=result)
            callback.on_step_end(iteration=0, trials=[])
            state[1] += 1
            if state[1] == REPORTS:
                callback.on_trial_complete(iteration=0, trials=[], trial=t)
                del running[tid]


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fill_study(study: Path, size: int, window: int) -> dict:
    """Step 1 (its own process, so that its memory does not count as the driver's)."""
    from resweep.study.results import StudyResults

    experiment = _experiment()
    meta = {"name": f"bench {size}", "knobs": ["optim.lr", "methods.spn.alpha", "model.channels"],
            "seeds": [0, 1, 2], "objectives": [{"metric": OBJECTIVE, "mode": "max"}], "variants": [],
            "iterations": ITERATIONS, "total_trials": size, "task": {"kind": "sr", "scale": 4}}
    study.mkdir(parents=True)
    (study / "study.json").write_text(json.dumps(meta))

    # 1. fill (flushes held back; one forced flush at the end)
    fill = size - window
    t0 = time.perf_counter()
    if fill:
        real_flush = StudyResults.flush
        StudyResults.flush = lambda self, force=False, min_interval_s=2.0, _hold=[True]: None  # type: ignore
        results = StudyResults(study, meta=meta)
        for i in range(fill):
            t = _trial(i, experiment)
            spec = t.config["trial"]
            results.trial_started(t.trial_id, spec["label"], spec["seed"], spec["params"], spec["experiment"],
                                  group=spec["group"])
            for r in range(REPORTS):
                results.trial_result(t.trial_id, _report(i, r))
            results.trial_completed(t.trial_id, None, ITERATIONS)
        StudyResults.flush = real_flush  # type: ignore
        results.flush(force=True)
        if hasattr(results, "compact"):
            results.compact()
    return {"fill_s": time.perf_counter() - t0}


def child(study: Path, size: int, window: int, concurrency: int) -> dict:
    from resweep.study.callback import StudyCallback

    experiment = _experiment()
    fill = size - window
    rss_before = _rss_mib()

    # 2. resume: the driver's callback set up on the folder
    callback = StudyCallback(study_dir=study, name="bench", objective=OBJECTIVE, mode="max",
                             total_trials=size, quiet=True)
    t0 = time.perf_counter()
    callback.setup()
    t_setup = time.perf_counter() - t0
    # the relay actor's process boots in the background (seconds on a loaded machine): wait for
    # it here, untimed, as a real study's actor is up long before its 100th trial; otherwise the
    # window's first drain waits for it and a 100-trial window reads as seconds per trial
    from resweep.trainables.relay import drain

    drain(callback.relay, timeout_s=300)

    # 3. the window of trials driven through the callback
    trials = [_trial(i, experiment) for i in range(fill, size)]
    t0, c0 = time.perf_counter(), time.process_time()
    _drive(callback, trials, concurrency)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    # 4. end of the experiment
    t0 = time.perf_counter()
    callback.on_experiment_end(trials=[])
    t_end = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from resweep.study.results import read_trials

    rows = len(read_trials(study))
    return {"size": size, "rows": rows, "setup_s": t_setup,
            "ms_per_trial": 1000 * wall / window, "cpu_ms_per_trial": 1000 * cpu / window,
            "end_s": t_end, "rss_before_mib": rss_before, "peak_rss_mib": peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--window", type=int, default=100, help="trials timed through the callback")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2,
                    help="window runs per size, each on a fresh copy of the filled study; the best is shown")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        what, study, size = args.child[0], Path(args.child[1]), int(args.child[2])
        window = min(args.window, size)
        out = fill_study(study, size, window) if what == "fill" else child(study, size, window, args.concurrency)
        print("RESULT " + json.dumps(out))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        filled: dict[int, dict] = {}
        for size in args.sizes:
            fill = _child(args, "fill", Path(tmp) / f"s{size}", size)
            if fill is None:
                return 1
            filled[size] = fill
        runs: dict[int, list[dict]] = {size: [] for size in args.sizes}
        for r in range(max(1, args.repeats)):  # rounds over the sizes: a load that drifts hits each alike
            for size in args.sizes:
                study = Path(tmp) / f"s{size}_run{r}"
                shutil.copytree(Path(tmp) / f"s{size}", study)
                run = _child(args, "run", study, size)
                if run is None:
                    return 1
                runs[size].append(run)
                shutil.rmtree(study, ignore_errors=True)
                print(f"done {size} (round {r + 1})", file=sys.stderr, flush=True)
        for size in args.sizes:
            row = dict(filled[size])
            row.update(min(runs[size], key=lambda x: x["ms_per_trial"]),
                       cpu_ms_per_trial=min(x["cpu_ms_per_trial"] for x in runs[size]),
                       peak_rss_mib=max(x["peak_rss_mib"] for x in runs[size]))
            rows.append(row)
    head = ("trials", "rows", "fill s", "resume setup s", "ms/trial", "cpu ms/trial", "end s",
            "RSS at start MiB", "peak RSS MiB")
    keys = ("size", "rows", "fill_s", "setup_s", "ms_per_trial", "cpu_ms_per_trial", "end_s",
            "rss_before_mib", "peak_rss_mib")
    print(" | ".join(f"{h:>12}" for h in head))
    for r in rows:
        print(" | ".join(f"{r[k]:>12}" if isinstance(r[k], int) else f"{r[k]:>12.2f}" for k in keys))
    base, base_cpu = rows[0]["ms_per_trial"], rows[0]["cpu_ms_per_trial"]
    print("per-trial cost relative to the smallest size (wall; CPU): "
          + ", ".join(f"{r['size']}: {r['ms_per_trial'] / base:.2f}x; {r['cpu_ms_per_trial'] / base_cpu:.2f}x"
                      for r in rows))
    return 0


def _child(args: argparse.Namespace, what: str, study: Path, size: int) -> dict | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", what, str(study), str(size),
         "--window", str(args.window), "--concurrency", str(args.concurrency)],
        capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(line[0][7:])


if __name__ == "__main__":
    raise SystemExit(main())
