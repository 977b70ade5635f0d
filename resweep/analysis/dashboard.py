"""The dashboard: one self-contained HTML file (plotly.js inlined, no network) per study.

Figures are plain plotly.js specs (dicts) serialised here with script-safe JSON, so the page
does not depend on plotly.py's figure validation (slow for 100k-point curves) and every
user string passes through :func:`_t` (HTML-escaped: plotly.js renders a subset of HTML in
labels, so an unescaped ``<a href>`` in a knob value would become a link).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.load import IMAGES_DIR, StudyData, sort_key
from resweep.analysis.stats import Importance, pareto_mask
from resweep.analysis.tables import AblationResult, Column, frame_to_html, html_escape, metric_title

PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a",
]
VIRIDIS = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"]
MAX_COLOUR_GROUPS = 12
CURVE_POINT_BUDGET = 20_000  # points per curve metric over all trials (page size, SVG speed)
MIN_CURVE_POINTS = 12  # per trial, whatever the budget
MAX_CURVE_METRICS = 8
CROP = 96  # side of the visual-comparison crops, pixels
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _t(text: Any) -> str:
    """A user string as plotly text: ``& < >`` escaped (plotly.js parses a subset of HTML in
    labels and decodes these entities for display; it shows ``&quot;`` literally, and quotes
    are harmless inside a JSON string)."""
    return html.escape(str(text), quote=False)


def _array_json(a: np.ndarray) -> str:
    """A numeric array as JSON text: integers as such, other numbers to 6 significant digits
    (enough for plots and hover; full float64 text would triple the page), NaN/inf as null."""
    if a.dtype.kind == "b":
        return json.dumps(a.tolist())
    if a.dtype.kind in "iu":
        return "[" + ",".join(map(str, a.tolist())) + "]"
    a = a.astype(np.float64, copy=False)
    finite = np.isfinite(a)
    if finite.all() and np.array_equal(a, np.round(a)) and (np.abs(a) < 2**53).all():
        return "[" + ",".join(map(str, a.astype(np.int64).tolist())) + "]"
    fmt = "{:.6g}".format
    return "[" + ",".join(fmt(v) if ok else "null" for v, ok in zip(a.tolist(), finite.tolist(), strict=True)) + "]"


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script>``: no ``</script>``, no HTML comment openers, no U+2028.

    Numeric numpy arrays are written by :func:`_array_json` (spliced in through placeholders
    carrying a random nonce, so no user string can collide with one).
    """
    nonce = secrets.token_hex(8)
    raw: list[str] = []

    def prepare(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            if o.dtype.kind in "biuf":
                raw.append(_array_json(o))
                return f"@@{nonce}:{len(raw) - 1}@@"
            return [prepare(v) for v in o.tolist()]
        if isinstance(o, dict):
            return {str(k): prepare(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [prepare(v) for v in o]
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating | float):
            return float(o) if math.isfinite(o) else None
        if isinstance(o, np.bool_):
            return bool(o)
        return o

    text = json.dumps(prepare(obj), allow_nan=False, separators=(",", ":"))
    text = (
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )
    if raw:  # numbers only: nothing to escape in them
        text = re.sub(f'"@@{nonce}:(\\d+)@@"', lambda m: raw[int(m.group(1))], text)
    return text


@dataclass
class Figure:
    id: str
    data: list[dict[str, Any]]
    layout: dict[str, Any]
    height: int = 460

    def html(self) -> str:
        layout = {"height": self.height, "margin": {"l": 60, "r": 30, "t": 50, "b": 50}, **self.layout}
        return (
            f'<div id="{html_escape(self.id)}" class="plot" style="height:{self.height}px"></div>\n'
            f"<script>Plotly.newPlot({script_json(self.id)}, {script_json(self.data)}, "
            f"{script_json(layout)}, {script_json(PLOT_CONFIG)});</script>\n"
        )


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
    base["row"] = base["trial_id"].map(row_of)
    base = base[base["row"].notna()]
    base["g"] = colouring.group_of_row[base["row"].astype(int).to_numpy()]
    n_trials = max(1, base["trial_id"].nunique())
    cap = max(MIN_CURVE_POINTS, CURVE_POINT_BUDGET // n_trials)
    row_names = result.rows.frame["row"].astype(str).to_numpy()
    few_rows = len(row_names) <= MAX_COLOUR_GROUPS

    traces: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    for mi, metric in enumerate(metrics):
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
                t: _t(f"{t} · {row_names[int(row_of[t])]} · seed {seed_of.get(t)}" if few_rows
                      else f"{t} · seed {seed_of.get(t)}") for t in pd.unique(ids)
            }
            text = np.insert(np.array([labels[t] for t in ids], dtype=object), breaks, None)
            g = int(g)
            traces.append({
                "type": "scatter", "mode": "lines", "x": x, "y": y, "text": text,
                "name": _t(colouring.names[g]), "legendgroup": f"g{g}",
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
            "label": _t(metric), "method": "update",
            "args": [{"visible": visible}, {"yaxis.type": axis_type(metric), "yaxis.title.text": _t(metric)}],
        })
    layout = {
        "title": {"text": f"Learning curves (one line per trial, colour: {_t(colouring.title)})", "x": 0.01},
        "margin": {"l": 60, "r": 30, "t": 90, "b": 50},
        "xaxis": {"title": {"text": "iteration"}},
        "yaxis": {"title": {"text": _t(metrics[0])}, "type": axis_type(metrics[0])},
        "updatemenus": [{"buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.22, "yanchor": "top"}]
        if len(metrics) > 1 else [],
        "legend": {"title": {"text": _t(colouring.title)}},
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
        label = _t(titles.get(k, k.rsplit(".", 1)[-1]))
        if num.notna().all() and not pd.api.types.is_bool_dtype(raw):
            dims.append({"label": label, "values": num.to_numpy(dtype=float)})
        else:
            text = display_column(raw)
            cats = sorted(text.unique(), key=sort_key)
            code = {c: i for i, c in enumerate(cats)}
            dims.append({"label": label, "values": np.array([code[v] for v in text], dtype=float),
                         "tickvals": list(range(len(cats))), "ticktext": [_t(c) for c in cats]})
    colour = None
    for o in objectives:
        vals = pd.to_numeric(t[f"final.{o['metric']}"], errors="coerce").to_numpy(dtype=float)
        dims.append({"label": _t(o["metric"]), "values": vals})
        colour = vals if colour is None else colour
    line = {"color": colour, "colorscale": "Viridis", "showscale": True,
            "colorbar": {"title": {"text": _t(objectives[0]["metric"])}}}
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
            "type": "bar", "orientation": "h", "name": _t(metric),
            "y": [_t(titles.get(k, k)) for k in knobs], "x": [values[k] for k in knobs],
            "marker": {"color": PALETTE[i % len(PALETTE)]},
            "hovertemplate": "%{y}: %{x:.3f}<extra>" + _t(metric) + "</extra>",
        })
    layout = {"title": {"text": "Hyperparameter importance (" + _t(imp.evaluator.split(" (")[0]) + ")"},
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
    hover = np.array([_t(f"{tid} · {r} · seed {s}") for tid, r, s in zip(t["trial_id"], rows, t["seed"], strict=True)],
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
    layout = {"title": {"text": f"Pareto front: {_t(m0)} ({objectives[0]['mode']}) vs {_t(m1)} ({objectives[1]['mode']})"},
              "xaxis": {"title": {"text": _t(m0)}}, "yaxis": {"title": {"text": _t(m1)}}}
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
    names = result.rows.frame["row"].astype(str).to_numpy()
    points = "all" if len(d) <= 6000 else "outliers"
    traces = []
    for i, (s, sd) in enumerate(d.groupby("set", sort=False)):
        sd = sd.sort_values("row", kind="stable")
        traces.append({
            "type": "box", "name": _t(s), "x": [_t(n) for n in names[sd["row"].to_numpy()]],
            "y": sd["delta"].to_numpy(dtype=float), "boxpoints": points, "jitter": 0.4, "pointpos": 0,
            "text": [_t(f"{img} · seed {seed}") for img, seed in zip(sd["image"], sd["seed"], strict=True)],
            "hovertemplate": "%{text}<br>Δ %{y:.4f}<extra>%{x}</extra>",
            "marker": {"color": PALETTE[i % len(PALETTE)], "size": 4}, "line": {"width": 1},
        })
    base = result.table.attrs.get("baseline_name")
    layout = {
        "title": {"text": f"Per-image Δ {_t(metric_title(column.metric))} vs baseline row '{_t(base)}' "
                          "(one point per image and seed)"},
        "boxmode": "group", "yaxis": {"title": {"text": f"Δ {_t(column.metric)}"}, "zeroline": True,
                                       "zerolinecolor": "#444", "zerolinewidth": 1.5},
        "xaxis": {"automargin": True},
    }
    return Figure("fig-delta", traces, layout, height=480)


# --------------------------------------------------------------------------- visual comparison
def find_image(study_dir: Path, folder: str, set_name: str, image: str) -> Path | None:
    """``<study>/images/<folder>/<set>/<image>`` (image name as recorded, or its stem + .png)."""
    root = study_dir / IMAGES_DIR / folder / set_name
    for name in (image, Path(image).stem + ".png"):
        candidate = root / name
        # names come from the data: never let one escape the images folder
        if candidate.resolve().is_relative_to((study_dir / IMAGES_DIR).resolve()) and candidate.is_file():
            return candidate
    return None


def _crop_box(gt: np.ndarray, a: np.ndarray, b: np.ndarray, side: int) -> tuple[int, int, int]:
    """Top-left corner and side of the window where a and b differ most in squared error."""
    h, w = gt.shape[:2]
    side = min(side, h, w)
    diff = np.abs(((a - gt) ** 2).mean(axis=2) - ((b - gt) ** 2).mean(axis=2))
    integral = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), side


def _png_data_uri(arr: np.ndarray, scale: int = 2) -> str:
    from PIL import Image

    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def visual_comparison(
    data: StudyData, result: AblationResult, ranking: pd.DataFrame, method_row: int | None, max_images: int = 6
) -> tuple[str, bool]:
    """Crops (ground truth, input baseline, baseline row, method row) for the images of
    ``ranking`` when the study folder holds saved outputs; (html, whether any crop was found)."""
    if ranking.empty or method_row is None or result.baseline_row is None:
        return "", False
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return "", False
    trials = data.trials.assign(_row=result.rows.trial_row)
    done = trials[trials["status"] == "finished"]
    blocks = []
    for rec in ranking.head(max_images).to_dict("records"):
        s, image = str(rec["set"]), str(rec["image"])
        for seed in sorted(set(done.loc[done["_row"] == method_row, "seed"]) & set(done.loc[done["_row"] == result.baseline_row, "seed"])):
            tm = done.loc[(done["_row"] == method_row) & (done["seed"] == seed), "trial_id"].iloc[0]
            tb = done.loc[(done["_row"] == result.baseline_row) & (done["seed"] == seed), "trial_id"].iloc[0]
            paths = {"ground truth": find_image(data.dir, "_gt", s, image),
                     "input baseline": find_image(data.dir, "_baseline", s, image),
                     "baseline row": find_image(data.dir, str(tb), s, image),
                     "method row": find_image(data.dir, str(tm), s, image)}
            if paths["ground truth"] is None or paths["method row"] is None or paths["baseline row"] is None:
                continue
            arrays = {k: np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for k, p in paths.items() if p}
            shape = arrays["ground truth"].shape
            if any(a.shape != shape for a in arrays.values()):
                continue
            y, x, side = _crop_box(arrays["ground truth"], arrays["method row"], arrays["baseline row"], CROP)
            figs = "".join(
                f'<figure><img alt="{html_escape(k)}" src="{_png_data_uri(a[y:y + side, x:x + side])}">'
                f"<figcaption>{html_escape(k)}</figcaption></figure>"
                for k, a in arrays.items()
            )
            blocks.append(
                f'<div class="crops"><p><b>{html_escape(s)} / {html_escape(image)}</b>, seed {html_escape(seed)}: '
                f"Δ {html_escape(format(rec['delta'], '+.3f'))} (crop at x={x}, y={y})</p>{figs}</div>"
            )
            break
    return "\n".join(blocks), bool(blocks)


# --------------------------------------------------------------------------- page
@dataclass
class Section:
    id: str
    title: str
    body: str


@dataclass
class Page:
    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
header{background:#1d2733;color:#fff;padding:16px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#c9d1d9;font-size:14px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde1e6;padding:8px 28px;z-index:5}
nav a{margin-right:16px;color:#1f6feb;text-decoration:none;font-size:14px}
main{padding:12px 28px 40px}section{background:#fff;border:1px solid #dde1e6;border-radius:8px;
margin:16px 0;padding:12px 18px}section h2{font-size:18px;margin:4px 0 10px}
.scroll{overflow:auto;max-height:70vh}thead tr:first-child th{position:sticky;top:0;z-index:1}table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e3e6ea;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#f0f2f5}th.group{text-align:center}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.baseline td{background:#fff8e1}tr.reference td{color:#57606a;font-style:italic;border-bottom:2px solid #d0d7de}td.better{color:#116329;font-weight:600}td.worse{color:#b42318;font-weight:600}
td.collapse{color:#b42318;font-style:italic}td.paper{color:#57606a;background:#f6f8fa}td.ref{color:#57606a}
caption{text-align:left;font-weight:600;padding:4px 0}ul.table-notes,p.note{font-size:12px;color:#57606a}
.todo{background:#fff4e5;border-left:4px solid #f59e0b;padding:8px 12px;font-size:14px}
.crops{margin:8px 0}.crops figure{display:inline-block;margin:4px 8px 4px 0;text-align:center}
.crops img{image-rendering:pixelated;border:1px solid #ccc}.crops figcaption{font-size:12px}
details summary{cursor:pointer;color:#1f6feb}
"""

# Records uncaught errors so a headless browser check (and a curious user) can read them from
# the DOM; harmless otherwise.
ERROR_CAPTURE = """window.__resweepErrors=[];
window.addEventListener('error',function(e){window.__resweepErrors.push(String(e.message||e));});
window.addEventListener('unhandledrejection',function(e){window.__resweepErrors.push('unhandled rejection: '+String(e.reason));});"""

STATUS_SCRIPT = """window.addEventListener('load',function(){setTimeout(function(){
var s=document.getElementById('page-status');
s.setAttribute('data-js-errors',String(window.__resweepErrors.length));
s.setAttribute('data-plots',String(document.querySelectorAll('.js-plotly-plot').length));
s.setAttribute('data-svg',String(document.querySelectorAll('.js-plotly-plot svg.main-svg').length));
s.textContent=window.__resweepErrors.join('\\n');},0);});"""


def render_page(page: Page) -> str:
    from plotly.offline import get_plotlyjs

    nav = "".join(f'<a href="#{html_escape(s.id)}">{html_escape(s.title)}</a>' for s in page.sections)
    body = "".join(
        f'<section id="{html_escape(s.id)}"><h2>{html_escape(s.title)}</h2>\n{s.body}</section>\n'
        for s in page.sections
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html_escape(page.title)}</title><style>{CSS}</style>\n"
        f"<script>{ERROR_CAPTURE}</script>\n"
        f"<script>{get_plotlyjs()}</script>\n</head><body>\n"
        f"<header><h1>{html_escape(page.title)}</h1>{page.subtitle}</header>\n"
        f"<nav>{nav}</nav>\n<main>\n{body}</main>\n"
        '<pre id="page-status" hidden></pre>\n'
        f"<script>{STATUS_SCRIPT}</script>\n</body></html>\n"
    )


def table_block(html_table: str) -> str:
    return f'<div class="scroll">{html_table}</div>'


def frame_block(df: pd.DataFrame, table_id: str, max_rows: int | None = None) -> str:
    return table_block(frame_to_html(df, table_id, max_rows=max_rows))
