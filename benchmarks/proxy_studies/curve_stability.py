"""Stability of the learning curves of a study, per row: the measure ECO's Fig. 4 is read by.

    python benchmarks/proxy_studies/curve_stability.py studies/eco_fig4_cpu [--metric eval.Set5.psnr_y]

For each row (variant label x knob values, e.g. batch size) over its seeds:

- ``early spread``: the standard deviation over seeds of the metric at each evaluation of the
  first half of training, averaged over those evaluations (the paper: vanilla "fluctuates" at
  small batch "especially in early training steps");
- ``jitter``: the standard deviation of successive differences along one run's curve (first
  half), averaged over seeds: how much a run's PSNR jumps between evaluations;
- ``drops``: the mean number of evaluations per run (first half) at which PSNR fell by more
  than 0.5 dB since the previous one;
- ``final``: mean ± std over seeds of the last evaluation, and ``auc``: the mean metric over
  all evaluations (faster convergence raises it).

Reads the study folder with resweep's own loader (resweep.analysis.load); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

from resweep.analysis.load import load_study  # noqa: E402


def stability(study_dir: Path, metric: str) -> pd.DataFrame:
    data = load_study(study_dir)
    trials = data.trials[data.trials["status"].isin(["finished", "diverged"])]
    knob_cols = [f"param.{k}" for k in data.knobs if f"param.{k}" in trials.columns]
    # only knobs that vary within a variant (a swept knob such as the batch size), not the
    # values a variant's overrides fix
    knob_cols = [c for c in knob_cols if trials.groupby("label")[c].nunique(dropna=True).max() > 1]
    curves = data.curves[["trial_id", "iteration", metric]].dropna()
    rows = []
    for key, group in trials.groupby(["label", *knob_cols], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        runs = {
            str(t.seed): curves[curves.trial_id == t.trial_id].sort_values("iteration").set_index("iteration")[metric]
            for t in group.itertuples()
        }
        if not runs:
            continue
        table = pd.DataFrame(runs)  # iterations x seeds
        half = table[table.index <= table.index.max() / 2]
        diffs = half.diff().iloc[1:]
        rows.append(
            {
                "row": key[0] + "".join(f", {c[6:]}={v}" for c, v in zip(knob_cols, key[1:], strict=True)),
                "n": table.shape[1],
                "early spread (dB)": float(half.std(axis=1, ddof=1).mean()) if table.shape[1] > 1 else np.nan,
                "jitter (dB)": float(diffs.std(axis=0, ddof=1).mean()),
                "drops > 0.5 dB": float((diffs < -0.5).sum(axis=0).mean()),
                "auc (dB)": float(table.mean(axis=0).mean()),
                "final (dB)": f"{table.iloc[-1].mean():.2f} ± {table.iloc[-1].std(ddof=1):.2f}",
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--metric", default="eval.Set5.psnr_y")
    args = parser.parse_args()
    table = stability(args.study, args.metric)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for record in table.itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in record]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
