"""Report build time and dashboard size vs study size: synthetic studies of 100, 1,000 and
10,000 trials.

    python benchmarks/bench_report.py [--sizes 100 1000 10000] [--repeats 2] [--keep DIR]

Each study is written in a temporary folder the way the platform writes one (study.json +
trials/curves/per_image Parquet): 3 seeds per configuration over a grid of two numeric knobs
and one list-valued knob, 50 reports per trial with 5 evaluations on 3 sets x 10 images
(150 per-image rows per trial), a few diverged and running trials. Timed: reading the folder,
the ablation table (with its paired bootstraps), and the whole ``build_report`` (tables in
four formats + the dashboard). The best of ``--repeats`` runs is shown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.analysis import build_report, load_study  # noqa: E402
from resweep.analysis.tables import compute_ablation  # noqa: E402

SEEDS = 3
SETS = ("Set5", "Set14", "Urban100")
IMAGES = 10
REPORTS = 50  # per trial (log every 20 of 1000 iterations)
EVALS = (200, 400, 600, 800, 1000)
METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")


def make_study(root: Path, n_trials: int, seed: int = 0) -> Path:
    """A synthetic finished-ish study of ``n_trials`` trials (vectorised: seconds for 1,000)."""
    rng = np.random.default_rng(seed)
    n_cfg = -(-n_trials // SEEDS)  # the last configuration may have fewer seeds
    # grid of knobs: alpha x lr x channels (as many distinct configurations as needed)
    lrs = np.array([1e-4, 2e-4, 5e-4, 1e-3, 2e-3])
    chans = [[32, 32], [64, 64], [96, 96]]
    alphas = np.round(np.linspace(0, 1, max(2, -(-n_cfg // (len(lrs) * len(chans))))), 4)
    cfg = [(a, lr, c) for a in alphas for lr in lrs for c in range(len(chans))][:n_cfg]
    cfg_of = np.repeat(np.arange(len(cfg)), SEEDS)[:n_trials]
    seed_of = np.tile(np.arange(SEEDS), len(cfg))[:n_trials]
    n = len(cfg_of)
    ids = np.array([f"trial_{i:05d}" for i in range(n)])
    effect = np.array([0.8 * a - 3 * abs(np.log10(lr) + 3.3) + 0.2 * c for a, lr, c in cfg])[cfg_of]
    status = np.full(n, "finished", dtype=object)
    status[rng.random(n) < 0.03] = "diverged"
    status[rng.random(n) < 0.02] = "running"

    # per-image: trial x eval x set x image
    n_img = len(SETS) * IMAGES
    t_idx = np.repeat(np.arange(n), len(EVALS) * n_img)
    e_idx = np.tile(np.repeat(np.arange(len(EVALS)), n_img), n)
    s_idx = np.tile(np.repeat(np.arange(len(SETS)), IMAGES), n * len(EVALS))
    i_idx = np.tile(np.arange(IMAGES), n * len(EVALS) * len(SETS))
    img_effect = rng.normal(0, 2, size=n_img)[s_idx * IMAGES + i_idx]
    psnr = 28 + effect[t_idx] + img_effect + 0.3 * e_idx + rng.normal(0, 0.2, size=len(t_idx))
    ssim = 0.8 + 0.01 * effect[t_idx] + rng.normal(0, 0.005, size=len(t_idx))
    per_image = {
        "trial_id": ids[t_idx], "iteration": np.array(EVALS)[e_idx],
        "set": np.array(SETS)[s_idx], "image": np.array([f"img{i:03d}.png" for i in range(IMAGES)])[i_idx],
        "psnr": psnr, "ssim": ssim, "psnr_y": psnr + 1, "ssim_y": ssim + 0.01,
        "psnr_baseline": 25 + img_effect, "ssim_baseline": np.full(len(t_idx), 0.7),
        "psnr_y_baseline": 26 + img_effect, "ssim_y_baseline": np.full(len(t_idx), 0.71),
    }
    pi_table = pa.table(per_image)

    # curves: REPORTS per trial, eval columns on the evaluation reports
    it = np.tile(np.arange(1, REPORTS + 1) * 20, n)
    c_t = np.repeat(np.arange(n), REPORTS)
    curves = {"trial_id": ids[c_t], "iteration": it,
              "loss.total": 0.05 / np.sqrt(it) * np.exp(-0.1 * effect[c_t]) + rng.normal(0, 1e-4, len(it)),
              "loss.l1": 0.04 / np.sqrt(it), "lr": np.full(len(it), 1e-3),
              "time_per_step": 0.01 + rng.normal(0, 1e-3, len(it)), "eco.alpha": rng.random(len(it))}
    means = {}
    psnr_mean = psnr.reshape(n, len(EVALS), len(SETS), IMAGES).mean(axis=3)
    ssim_mean = ssim.reshape(n, len(EVALS), len(SETS), IMAGES).mean(axis=3)
    eval_pos = np.isin(it, EVALS)
    e_of_report = np.searchsorted(EVALS, it)
    for si, s in enumerate(SETS):
        for m, arr, add in (("psnr", psnr_mean, 0), ("ssim", ssim_mean, 0), ("psnr_y", psnr_mean, 1),
                            ("ssim_y", ssim_mean, 0.01)):
            col = np.full(len(it), np.nan)
            col[eval_pos] = arr[c_t[eval_pos], e_of_report[eval_pos], si] + add
            curves[f"eval.{s}.{m}"] = col
            means[f"{s}.{m}"] = arr[:, -1, si] + add
    c_table = pa.table(curves)

    trials = {
        "trial_id": ids, "label": np.full(n, ""), "seed": seed_of, "status": status.astype(str),
        "error": np.where(status == "diverged", "loss diverged: inf", None),
        "iterations": np.where(status == "finished", 1000, 400), "time_total_s": rng.uniform(50, 90, n),
        "param.methods.spn.alpha": np.array([c[0] for c in cfg])[cfg_of],
        "param.optim.lr": np.array([c[1] for c in cfg])[cfg_of],
        "param.model.channels": np.array([json.dumps(chans[c[2]]) for c in cfg])[cfg_of],
    }
    for k in ("methods.spn.alpha", "optim.lr", "model.channels"):
        trials[f"config.{k}"] = trials[f"param.{k}"]
    for key, v in means.items():
        trials[f"final.eval.{key}"] = v
        trials[f"best.eval.{key}"] = v
    trials["final.time_per_step"] = 0.01 + 0.002 * np.array([c[2] for c in cfg])[cfg_of] + rng.normal(0, 1e-4, n)
    trials["final.loss.total"] = curves["loss.total"].reshape(n, REPORTS)[:, -1]
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(trials), root / "trials.parquet")
    pq.write_table(c_table, root / "curves.parquet")
    pq.write_table(pi_table, root / "per_image.parquet")
    meta = {
        "name": f"bench {n} trials", "description": "synthetic benchmark study",
        "knobs": ["methods.spn.alpha", "optim.lr", "model.channels"], "seeds": list(range(SEEDS)),
        "objectives": [{"metric": "eval.Set5.psnr_y", "mode": "max"}, {"metric": "time_per_step", "mode": "min"}],
        "baseline": None, "variants": [], "paper": None, "iterations": 1000, "total_trials": n,
        "task": {"kind": "sr", "scale": 4},
    }
    (root / "study.json").write_text(json.dumps(meta))
    return root


def _best(fn, repeats: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, result). CPU time is shown too because the
    machine may be shared: wall time then includes waiting for a core."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, cpu = wall, used
    return best, cpu, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="write the studies here instead of a temporary folder")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for size in args.sizes:
            study = make_study(base / f"study_{size}", size)
            curves_rows = pq.read_metadata(study / "curves.parquet").num_rows
            pi_rows = pq.read_metadata(study / "per_image.parquet").num_rows
            t_load, _, data = _best(lambda s=study: load_study(s), args.repeats)
            t_table, _, res = _best(lambda d=data: compute_ablation(d), args.repeats)
            t_report, c_report, report = _best(lambda s=study: build_report(s), args.repeats)
            n_trials = pq.read_metadata(study / "trials.parquet").num_rows
            rows.append((n_trials, len(res.table), curves_rows, pi_rows, t_load, t_table, t_report, c_report,
                         report.index_path.stat().st_size / 2**20))
    head = ("trials", "table rows", "curve rows", "per-image rows", "load s", "ablation s",
            "build_report s", "(cpu s)", "index.html MiB")
    print(" | ".join(f"{h:>14}" for h in head))
    for r in rows:
        print(" | ".join(f"{v:>14}" if isinstance(v, int) else f"{v:>14.2f}" for v in r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
