"""What the dashboard draws for a study too large to draw trial by trial.

Above :data:`INDIVIDUAL_CURVES_MAX` trials the learning curves become, per colour group, the
median and the 10-90 % band over the group's trials on at most :data:`BAND_POINTS` iterations,
with the best and worst :data:`EXTREME_TRIALS` trials (by the primary objective) drawn
individually; above :data:`DELTA_ROWS_MAX` rows the per-image Δ shows the rows with the largest
and smallest mean Δ. The page's size then depends on the number of colour groups and of
iterations, not on the number of trials; every trial stays reachable in the trial explorer
(:mod:`resweep.analysis.trial_explorer`) and in ``tables/``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.formatting import better
from resweep.analysis.load import StudyData
from resweep.analysis.plotly_spec import plot_text

INDIVIDUAL_CURVES_MAX = 48  # trials drawn one line each up to this many
EXTREME_TRIALS = 5  # best and worst trials drawn individually above it
BAND_POINTS = 150  # iterations per band
BAND_QUANTILES = (0.1, 0.5, 0.9)
DELTA_ROWS_MAX = 30  # rows in the per-image Δ figure (half best, half worst by mean Δ)


def extreme_trials(data: StudyData, key: str | None, k: int = EXTREME_TRIALS) -> tuple[list[str], list[str]]:
    """(best k, worst k) finished trials by ``final.<key>`` (the objective's direction)."""
    col = f"final.{key}" if key else None
    t = data.trials
    if col is None or col not in t.columns:
        return [], []
    t = t[t["status"] == "finished"]
    values = pd.to_numeric(t[col], errors="coerce")
    ok = values.notna().to_numpy()
    ids, values = t["trial_id"].to_numpy()[ok], values.to_numpy(dtype=float)[ok]
    mode = next((o["mode"] for o in data.objectives if o["metric"] == key), None)
    order = np.argsort(-values if better(key, mode) == "max" else values, kind="stable")
    best = [str(i) for i in ids[order[:k]]]
    worst = [str(i) for i in ids[order[::-1][:k]] if str(i) not in best]
    return best, worst


def band_stats(wide: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quantiles (index g, iteration, quantile) and trial counts (index g, iteration) of every
    metric of ``wide`` (trial_id, iteration, g, one column per metric), in one grouping."""
    its = np.sort(wide["iteration"].unique())
    if len(its) > BAND_POINTS:  # bins of iterations: a trial contributes its mean within a bin
        edges = np.linspace(its[0], its[-1], BAND_POINTS + 1)
        binned = edges[np.clip(np.searchsorted(edges, wide["iteration"], "right") - 1, 0, BAND_POINTS - 1)]
        wide = wide.assign(iteration=binned).groupby(["g", "trial_id", "iteration"], sort=False,
                                                     as_index=False)[metrics].mean()
    grouped = wide.groupby(["g", "iteration"], sort=True)[metrics]
    return grouped.quantile(list(BAND_QUANTILES)), grouped.count()


def band_traces(quantiles: pd.DataFrame, counts: pd.DataFrame, metric: str, names: list[str],
                colours: list[str], visible: bool) -> list[dict[str, Any]]:
    """Median line and 10-90 % band per colour group of one metric (from :func:`band_stats`)."""
    q = quantiles[metric].unstack()
    n = counts[metric]
    traces = []
    for g, frame in q.groupby(level=0, sort=True):
        keep = (n.loc[g] > 0).to_numpy()
        if not keep.any():
            continue
        g = int(g)
        x = frame.index.get_level_values(1).to_numpy(dtype=float)[keep]
        lo, mid, hi = (frame[qq].to_numpy(dtype=float)[keep] for qq in BAND_QUANTILES)
        name, colour = plot_text(names[g]), colours[g]
        common = {"type": "scatter", "mode": "lines", "x": x, "legendgroup": f"g{g}", "visible": visible,
                  "hoverinfo": "skip", "showlegend": False}
        traces.append({**common, "y": lo, "line": {"width": 0, "color": colour}, "name": name})
        traces.append({**common, "y": hi, "line": {"width": 0, "color": colour}, "name": name,
                       "fill": "tonexty", "fillcolor": _transparent(colour), "opacity": 0.3})
        traces.append({
            "type": "scatter", "mode": "lines", "x": x, "y": mid, "name": name, "legendgroup": f"g{g}",
            "line": {"color": colour, "width": 2}, "visible": visible,
            "customdata": np.round(np.column_stack([lo, hi, n.loc[g].to_numpy(dtype=float)[keep]]), 6).tolist(),
            "hovertemplate": ("iteration %{x}<br>median %{y:.5g} (10-90 %: %{customdata[0]:.5g} to "
                              "%{customdata[1]:.5g}, %{customdata[2]} trials)<extra>%{fullData.name}</extra>"),
        })
    return traces


def extreme_traces(sub: pd.DataFrame, best: list[str], worst: list[str], labels: dict[str, str],
                   visible: bool) -> list[dict[str, Any]]:
    traces = []
    sub = sub[sub["trial_id"].isin([*best, *worst])]  # once: the frame holds every trial's points
    by_trial = dict(tuple(sub.groupby("trial_id", sort=False)))
    for kind, ids, style in (("best", best, "solid"), ("worst", worst, "dot")):
        for i, tid in enumerate(ids):
            t = by_trial.get(tid, sub.iloc[:0]).sort_values("iteration")
            if t.empty:
                continue
            traces.append({
                "type": "scatter", "mode": "lines", "x": t["iteration"].to_numpy(dtype=float),
                "y": t["y"].to_numpy(dtype=float), "name": plot_text(f"{kind} {i + 1}: {labels.get(tid, tid)}"),
                "legendgroup": kind, "visible": visible,
                "line": {"color": "#111111" if kind == "best" else "#b42318", "width": 1.3, "dash": style},
                "hovertemplate": "iteration %{x}<br>%{y:.5g}<extra>%{fullData.name}</extra>",
            })
    return traces


def _transparent(colour: str) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},0.25)"


def delta_rows(d: pd.DataFrame, baseline_row: int | None) -> tuple[pd.DataFrame, str]:
    """The per-image Δ rows to draw: all when few; else the rows with the largest and the
    smallest mean Δ (half each). Returns (rows of ``d`` kept, note for the title)."""
    rows = d["row"].unique()
    if len(rows) <= DELTA_ROWS_MAX:
        return d, "one point per image and seed"
    mean = d.groupby("row")["delta"].mean().sort_values(kind="stable")
    half = DELTA_ROWS_MAX // 2
    keep = set(mean.index[:half]) | set(mean.index[-half:])
    if baseline_row is not None:
        keep.discard(baseline_row)
    return d[d["row"].isin(keep)], (f"the {half} rows of largest and {half} of smallest mean Δ of "
                                     f"{len(rows)}; every row in the ablation table")
