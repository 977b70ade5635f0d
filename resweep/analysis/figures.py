"""The dashboard's figures: learning curves, parallel coordinates, knob importance, the
Pareto front of quality against cost, and per-image deltas against the baseline row.

Each builder returns a :class:`~resweep.analysis.plotly_spec.Figure` (or None when the study
lacks what it shows); every user string goes through :func:`plot_text`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.load import StudyData, sort_key
from resweep.analysis.plotly_spec import Figure, plot_text
from resweep.analysis.stats import Importance, pareto_mask
from resweep.analysis.summary_figures import (
    EXTREME_TRIALS,
    INDIVIDUAL_CURVES_MAX,
    band_stats,
    band_traces,
    delta_rows,
    extreme_traces,
    extreme_trials,
)
from resweep.analysis.tables import AblationResult, Column, metric_title

PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a",
]
VIRIDIS = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"]
MAX_COLOUR_GROUPS = 12
CURVE_POINT_BUDGET = 20_000  # points per curve metric over all trials (page size, SVG speed)
MIN_CURVE_POINTS = 12  # per trial, whatever the budget
MAX_CURVE_METRICS = 8


# --------------------------------------------------------------------------- colour by knob
@dataclass
class Colouring:
    group_of_row: np.ndarray  # group index per table row
    names: list[str]
    colours: list[str]
    title: str


def colour_groups(result: AblationResult) -> Colouring:
    """Rows coloured individually when few; otherwise by the first knob (binned if numeric)."""
    frame = result.rows.frame
    n = len(frame)
    if n <= MAX_COLOUR_GROUPS or not result.rows.shown_knobs:
        names = [str(r) for r in frame["row"]]
        colours = [PALETTE[i % len(PALETTE)] for i in range(n)]
        return Colouring(np.arange(n), names, colours, "row")
    knob = result.rows.shown_knobs[0]
    title = result.rows.knob_titles.get(knob, knob)
    values = frame[f"param.{knob}"].astype(str)
    numeric = pd.to_numeric(values.replace({"none": np.nan}), errors="coerce")
    if numeric.notna().all() and numeric.nunique() > MAX_COLOUR_GROUPS:
        ranks = numeric.rank(method="dense").to_numpy()
        bins = np.minimum(((ranks - 1) / ranks.max() * 8).astype(int), 7)
        names = []
        for b in range(8):
            sel = numeric[bins == b]
            names.append(f"{title} {sel.min():g}…{sel.max():g}" if len(sel) else f"{title} (empty)")
        return Colouring(bins, names, list(VIRIDIS), title)
    uniq = sorted(values.unique(), key=sort_key)
    keep = uniq[: MAX_COLOUR_GROUPS - 1] if len(uniq) > MAX_COLOUR_GROUPS else uniq
    index = {v: i for i, v in enumerate(keep)}
    groups = np.array([index.get(v, len(keep)) for v in values])
    names = [f"{title}={v}" for v in keep] + (["other"] if len(uniq) > len(keep) else [])
    return Colouring(groups, names, [PALETTE[i % len(PALETTE)] for i in range(len(names))], title)


# --------------------------------------------------------------------------- figures
def curves_figure(data: StudyData, result: AblationResult, colouring: Colouring, primary: Column | None) -> Figure | None:
    curves = data.curves
    if curves.empty or "iteration" not in curves.columns:
        return None
    metrics = _curve_metrics(curves, data, primary)
    if not metrics:
        return None
    trials = data.trials
    row_of = pd.Series(result.rows.trial_row.to_numpy(), index=trials["trial_id"].to_numpy())
    row_of = row_of[~row_of.index.duplicated()]
    seed_of = pd.Series(trials["seed"].to_numpy(), index=trials["trial_id"].to_numpy())
    seed_of = seed_of[~seed_of.index.duplicated()]
    base = curves[["trial_id", "iteration"]].copy()
    base["row"] = _lookup(row_of, base["trial_id"])
    base = base[base["row"].notna()]
    base["g"] = colouring.group_of_row[base["row"].astype(int).to_numpy()]
    n_trials = max(1, base["trial_id"].nunique())
    cap = max(MIN_CURVE_POINTS, CURVE_POINT_BUDGET // n_trials)
    row_names = result.rows.frame["row"].astype(str).to_numpy()
    few_rows = len(row_names) <= MAX_COLOUR_GROUPS

    summarised = n_trials > INDIVIDUAL_CURVES_MAX
    if summarised:  # bands per colour group, the best and worst trials individually
        best, worst = extreme_trials(data, primary.key if primary is not None else None)
        labels = {t: f"{t} · {row_names[int(row_of[t])]} · seed {seed_of.get(t)}" for t in (*best, *worst)}
        wide = base.join(curves.loc[base.index, metrics].apply(pd.to_numeric, errors="coerce"))
        quantiles, counts = band_stats(wide, metrics)
        extremes = wide[wide["trial_id"].isin([*best, *worst])]
    traces: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    for mi, metric in enumerate(metrics):
        if summarised:
            sub = extremes.assign(y=extremes[metric])
            sub = sub[np.isfinite(sub["y"].to_numpy(dtype=float))]
            start = len(traces)
            traces += band_traces(quantiles, counts, metric, colouring.names, colouring.colours, mi == 0)
            traces += extreme_traces(sub, best, worst, labels, mi == 0)
            spans.append((start, len(traces)))
            continue
        sub = base.assign(y=pd.to_numeric(curves.loc[base.index, metric], errors="coerce"))
        sub = sub[np.isfinite(sub["y"].to_numpy(dtype=float))]
        sub = _downsample(sub, cap).sort_values(["g", "trial_id", "iteration"], kind="stable")
        start = len(traces)
        for g, gdf in sub.groupby("g", sort=True):
            codes = pd.factorize(gdf["trial_id"])[0]
            breaks = np.flatnonzero(codes[1:] != codes[:-1]) + 1
            x = np.insert(gdf["iteration"].to_numpy(dtype=float), breaks, np.nan)
            y = np.insert(gdf["y"].to_numpy(dtype=float), breaks, np.nan)
            ids = gdf["trial_id"].to_numpy()
            # hover text is per point, so keep it short when rows are many (the row is in the
            # trace name then only as a colour group)
            labels = {
                t: plot_text(f"{t} · {row_names[int(row_of[t])]} · seed {seed_of.get(t)}" if few_rows
                      else f"{t} · seed {seed_of.get(t)}") for t in pd.unique(ids)
            }
            text = np.insert(np.array([labels[t] for t in ids], dtype=object), breaks, None)
            g = int(g)
            traces.append({
                "type": "scatter", "mode": "lines", "x": x, "y": y, "text": text,
                "name": plot_text(colouring.names[g]), "legendgroup": f"g{g}",
                "line": {"color": colouring.colours[g], "width": 1.2}, "opacity": 0.8,
                "hovertemplate": "%{text}<br>iteration %{x}<br>%{y:.5g}<extra>%{fullData.name}</extra>",
                "visible": mi == 0, "connectgaps": False,
            })
        spans.append((start, len(traces)))
    if not traces:
        return None

    def axis_type(metric: str) -> str:
        return "log" if metric.startswith("loss") or metric == "lr" else "linear"

    buttons = []
    for mi, metric in enumerate(metrics):
        visible = [spans[mi][0] <= i < spans[mi][1] for i in range(len(traces))]
        buttons.append({
            "label": plot_text(metric), "method": "update",
            "args": [{"visible": visible}, {"yaxis.type": axis_type(metric), "yaxis.title.text": plot_text(metric)}],
        })
    layout = {
        "title": {"text": (f"Learning curves: median and 10-90 % band over the {n_trials} trials of each "
                           f"{plot_text(colouring.title)}; best (solid) and worst (dotted) {EXTREME_TRIALS} by "
                           f"{plot_text(primary.key if primary is not None else '')}") if summarised else
                  f"Learning curves (one line per trial, colour: {plot_text(colouring.title)})", "x": 0.01,
                  "font": {"size": 14}},
        "margin": {"l": 60, "r": 30, "t": 90, "b": 50},
        "xaxis": {"title": {"text": "iteration"}},
        "yaxis": {"title": {"text": plot_text(metrics[0])}, "type": axis_type(metrics[0])},
        "updatemenus": [{"buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.22, "yanchor": "top"}]
        if len(metrics) > 1 else [],
        "legend": {"title": {"text": plot_text(colouring.title)}},
    }
    return Figure("fig-curves", traces, layout, height=520)


def _curve_metrics(curves: pd.DataFrame, data: StudyData, primary: Column | None) -> list[str]:
    cols = [c for c in curves.columns if c not in ("trial_id", "iteration", "status")]
    numeric = [c for c in cols if pd.api.types.is_numeric_dtype(curves[c]) and not pd.api.types.is_bool_dtype(curves[c])]
    out = []
    if "loss.total" in numeric:
        out.append("loss.total")
    for o in data.objectives:
        if o["metric"] in numeric and o["metric"] not in out:
            out.append(o["metric"])
    if primary is not None:
        out += [c for c in numeric if c.startswith("eval.") and c.endswith("." + primary.metric) and c not in out]
    out += [c for c in ("lr", "time_per_step") if c in numeric and c not in out]
    skip = ("loss.", "eval.", "config.", "time_", "training_iteration", "timestamp", "done", "pid")
    out += [c for c in numeric if "." in c and not c.startswith(skip) and c not in out]
    out += [c for c in numeric if c.startswith("loss.") and c not in out]
    return out[:MAX_CURVE_METRICS]


def _downsample(df: pd.DataFrame, cap: int) -> pd.DataFrame:
    """At most ``cap`` points per trial (evenly spaced, the last one kept)."""
    df = df.sort_values(["trial_id", "iteration"], kind="stable")
    grp = df.groupby("trial_id", sort=False)
    cum = grp.cumcount().to_numpy()
    size = grp["iteration"].transform("size").to_numpy()
    step = np.maximum(1, np.ceil(size / cap)).astype(int)
    keep = (cum % step == 0) | (cum == size - 1)
    return df[keep]


def parcoords_figure(data: StudyData, result: AblationResult) -> Figure | None:
    t = data.trials[data.trials["status"] == "finished"]
    objectives = [o for o in data.objectives if f"final.{o['metric']}" in t.columns]
    knobs = [k for k in data.knobs if f"param.{k}" in t.columns]
    if t.empty or not objectives or not knobs:
        return None
    titles = result.rows.knob_titles
    dims = []
    from resweep.analysis.load import display_column  # local: keeps the module's import list short

    for k in knobs:
        raw = t[f"param.{k}"]
        num = pd.to_numeric(raw, errors="coerce")
        label = plot_text(titles.get(k, k.rsplit(".", 1)[-1]))
        if num.notna().all() and not pd.api.types.is_bool_dtype(raw):
            dims.append({"label": label, "values": num.to_numpy(dtype=float)})
        else:
            text = display_column(raw)
            cats = sorted(text.unique(), key=sort_key)
            code = {c: i for i, c in enumerate(cats)}
            dims.append({"label": label, "values": np.array([code[v] for v in text], dtype=float),
                         "tickvals": list(range(len(cats))), "ticktext": [plot_text(c) for c in cats]})
    colour = None
    for o in objectives:
        vals = pd.to_numeric(t[f"final.{o['metric']}"], errors="coerce").to_numpy(dtype=float)
        dims.append({"label": plot_text(o["metric"]), "values": vals})
        colour = vals if colour is None else colour
    line = {"color": colour, "colorscale": "Viridis", "showscale": True,
            "colorbar": {"title": {"text": plot_text(objectives[0]["metric"])}}}
    trace = {"type": "parcoords", "dimensions": dims, "line": line}
    layout = {"title": {"text": "Knobs vs objectives (finished trials; drag on an axis to filter)"},
              "margin": {"l": 80, "r": 80, "t": 90, "b": 40}}
    return Figure("fig-parcoords", [trace], layout, height=480)


def importance_figure(imp: Importance, titles: dict[str, str]) -> Figure | None:
    if not imp.values:
        return None
    traces = []
    for i, (metric, values) in enumerate(imp.values.items()):
        knobs = sorted(values, key=lambda k: values[k])
        traces.append({
            "type": "bar", "orientation": "h", "name": plot_text(metric),
            "y": [plot_text(titles.get(k, k)) for k in knobs], "x": [values[k] for k in knobs],
            "marker": {"color": PALETTE[i % len(PALETTE)]},
            "hovertemplate": "%{y}: %{x:.3f}<extra>" + plot_text(metric) + "</extra>",
        })
    layout = {"title": {"text": "Hyperparameter importance (" + plot_text(imp.evaluator.split(" (")[0]) + ")"},
              "barmode": "group", "xaxis": {"title": {"text": "importance (normalised)"}},
              "margin": {"l": 160, "r": 30, "t": 50, "b": 50}}
    n_bars = sum(len(v) for v in imp.values.values())
    return Figure("fig-importance", traces, layout, height=max(300, 60 + 28 * n_bars))


def pareto_figure(data: StudyData, result: AblationResult) -> tuple[Figure | None, pd.DataFrame]:
    objectives = [o for o in data.objectives if f"final.{o['metric']}" in data.trials.columns]
    if len(objectives) < 2:
        return None, pd.DataFrame()
    t = data.trials[data.trials["status"] == "finished"]
    values = np.column_stack([
        pd.to_numeric(t[f"final.{o['metric']}"], errors="coerce").to_numpy(dtype=float) for o in objectives
    ]) if len(t) else np.empty((0, len(objectives)))
    ok = np.isfinite(values).all(axis=1)
    if ok.sum() == 0:
        return None, pd.DataFrame()
    front = pareto_mask(values, [o["mode"] for o in objectives])
    rows = result.rows.frame["row"].astype(str).to_numpy()[result.rows.trial_row[t.index].to_numpy()]
    hover = np.array([plot_text(f"{tid} · {r} · seed {s}") for tid, r, s in zip(t["trial_id"], rows, t["seed"], strict=True)],
                     dtype=object)
    m0, m1 = objectives[0]["metric"], objectives[1]["metric"]
    order = np.argsort(values[front, 0])
    traces = [
        {"type": "scatter", "mode": "markers", "name": "trials", "x": values[ok & ~front, 0],
         "y": values[ok & ~front, 1], "text": hover[ok & ~front],
         "marker": {"color": "#9aa5b1", "size": 7}, "hovertemplate": "%{text}<br>%{x:.5g}, %{y:.5g}<extra></extra>"},
        {"type": "scatter", "mode": "lines+markers", "name": "Pareto front", "x": values[front, 0][order],
         "y": values[front, 1][order], "text": hover[front][order], "line": {"shape": "hv", "color": "#d62728"},
         "marker": {"color": "#d62728", "size": 10},
         "hovertemplate": "%{text}<br>%{x:.5g}, %{y:.5g}<extra></extra>"},
    ]
    layout = {"title": {"text": f"Pareto front: {plot_text(m0)} ({objectives[0]['mode']}) vs {plot_text(m1)} ({objectives[1]['mode']})"},
              "xaxis": {"title": {"text": plot_text(m0)}}, "yaxis": {"title": {"text": plot_text(m1)}}}
    table = pd.DataFrame({"trial_id": t["trial_id"].to_numpy()[front], "row": rows[front],
                          "seed": t["seed"].to_numpy()[front]})
    for i, o in enumerate(objectives):
        table[o["metric"]] = values[front, i]
    return Figure("fig-pareto", traces, layout, height=480), table


def delta_figure(result: AblationResult, column: Column | None) -> Figure | None:
    if column is None or result.diffs.empty:
        return None
    d = result.diffs[result.diffs["metric"] == column.metric]
    if d.empty:
        return None
    d, shown = delta_rows(d, result.baseline_row)
    names = result.rows.frame["row"].astype(str).to_numpy()
    points = "all" if len(d) <= 6000 else "outliers"
    traces = []
    for i, (s, sd) in enumerate(d.groupby("set", sort=False)):
        sd = sd.sort_values("row", kind="stable")
        traces.append({
            "type": "box", "name": plot_text(s), "x": [plot_text(n) for n in names[sd["row"].to_numpy()]],
            "y": sd["delta"].to_numpy(dtype=float), "boxpoints": points, "jitter": 0.4, "pointpos": 0,
            "text": [plot_text(f"{img} · seed {seed}") for img, seed in zip(sd["image"], sd["seed"], strict=True)],
            "hovertemplate": "%{text}<br>Δ %{y:.4f}<extra>%{x}</extra>",
            "marker": {"color": PALETTE[i % len(PALETTE)], "size": 4}, "line": {"width": 1},
        })
    base = result.table.attrs.get("baseline_name")
    layout = {
        "title": {"text": f"Per-image Δ {plot_text(metric_title(column.metric))} vs baseline row '{plot_text(base)}' "
                          f"({plot_text(shown)})"},
        "boxmode": "group", "yaxis": {"title": {"text": f"Δ {plot_text(column.metric)}"}, "zeroline": True,
                                       "zerolinecolor": "#444", "zerolinewidth": 1.5},
        "xaxis": {"automargin": True},
    }
    return Figure("fig-delta", traces, layout, height=480)


def _lookup(table: pd.Series, keys: pd.Series) -> np.ndarray:
    """``keys.map(table)`` for a ``table`` with a unique index: the same values and dtype (NaN,
    as float, where a key is missing), by one hash lookup instead of a per-element map (10^5
    curve points of Arrow strings)."""
    if keys.empty:
        return keys.map(table).to_numpy()
    pos = table.index.get_indexer(keys)
    values = table.to_numpy()[pos]
    if (pos < 0).any():
        values = np.where(pos >= 0, values.astype(np.float64), np.nan)
    return values
