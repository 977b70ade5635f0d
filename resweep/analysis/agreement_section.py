"""The dashboard's "Agreement with the paper" section: our Δ against the paper's, one point per
row with our bootstrap CI, coloured by verdict; the per-row table; and ``agreement.json``.
The numbers come from :mod:`resweep.analysis.agreement` (computed with the ablation table)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis import dashboard as dash
from resweep.analysis.plotly_spec import Figure, plot_text
from resweep.analysis.tables import html_escape

AGREEMENT_FILE = "agreement.json"
VERDICT_COLOURS = {"agree": "#2ca02c", "disagree": "#d62728", "undecided": "#7f7f7f"}


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_agreement(agreement: dict[str, Any], table_attrs: dict[str, Any], out_dir: Path) -> Path:
    """``<out>/agreement.json``: the paper reference, the column, per-row verdicts, τ, counts."""
    doc = {"study": table_attrs.get("study"), "paper": {k: v for k, v in (table_attrs.get("paper") or {}).items()
                                                      if k != "values"},
           "ci": table_attrs.get("ci"), "n_boot": table_attrs.get("n_boot"), **agreement}
    path = out_dir / AGREEMENT_FILE
    path.write_text(json.dumps(_json_safe(doc), indent=2, allow_nan=False), encoding="utf-8")
    return path


def agreement_figure(agreement: dict[str, Any]) -> Figure | None:
    pts = [r for r in agreement["rows"] if r["paper_delta"] is not None and r["delta"] is not None]
    if not pts:
        return None
    traces = []
    for verdict, colour in VERDICT_COLOURS.items():
        sel = [r for r in pts if r["verdict"] == verdict]
        if not sel:
            continue
        d = np.array([r["delta"] for r in sel], dtype=float)
        lo = np.array([np.nan if r["ci_low"] is None else r["ci_low"] for r in sel], dtype=float)
        hi = np.array([np.nan if r["ci_high"] is None else r["ci_high"] for r in sel], dtype=float)
        traces.append({
            "type": "scatter", "mode": "markers+text", "name": verdict,
            "x": np.array([r["paper_delta"] for r in sel], dtype=float), "y": d,
            "text": [plot_text(r["row"]) for r in sel], "textposition": "top center",
            "error_y": {"type": "data", "symmetric": False, "array": np.nan_to_num(hi - d),
                        "arrayminus": np.nan_to_num(d - lo), "color": colour},
            "marker": {"color": colour, "size": 9},
            "hovertemplate": "%{text}<br>paper Δ %{x:.4f}<br>our Δ %{y:.4f}<extra>" + verdict + "</extra>",
        })
    column = plot_text(agreement["column"])
    layout = {
        "title": {"text": f"Ours vs the paper: Δ vs baseline row '{plot_text(agreement['baseline'])}' ({column})"},
        "xaxis": {"title": {"text": "paper Δ (as published)"}, "zeroline": True, "zerolinecolor": "#444"},
        "yaxis": {"title": {"text": f"our Δ {column} (95% paired CI)"}, "zeroline": True, "zerolinecolor": "#444"},
    }
    return Figure("fig-agreement", traces, layout, height=460)


def agreement_section(agreement: dict[str, Any] | None) -> dash.Section | None:
    """None when the study has no paper values."""
    if agreement is None:
        return None
    if agreement["column"] is None:
        return dash.Section("agreement", "Agreement with the paper",
                            f'<p class="note">{html_escape(agreement["note"])}</p>')
    kt = agreement["kendall"]
    tau = "—" if kt["tau"] is None or not math.isfinite(kt["tau"]) else f"{kt['tau']:+.3f}"
    c = agreement["counts"]
    intro = (f"<p>Sign of Δ vs the baseline row: <b>{c['agree']}</b> agree, <b>{c['disagree']}</b> disagree, "
             f"<b>{c['undecided']}</b> undecided (our CI includes 0, or no CI). Kendall's τ-b of our row means "
             f"vs the paper's values: <b>{html_escape(tau)}</b> over {int(kt['n'])} rows "
             f"({int(kt['concordant'])} concordant, {int(kt['discordant'])} discordant pairs).</p>")
    fig = agreement_figure(agreement)
    frame = pd.DataFrame([{k: r[k] for k in ("row", "paper", "paper_delta", "mean", "delta", "ci_low", "ci_high",
                                              "pairs", "verdict", "reason")} for r in agreement["rows"]])
    frame["paper"] = frame["paper"].astype(str)
    body = intro + (fig.html() if fig else '<p class="note">No row with both a paper Δ and ours yet.</p>')
    body += dash.frame_block(frame, "agreement-table")
    body += (f'<p class="note">Column {html_escape(agreement["column"])}; collapse rows: agree when every seed '
             f"diverged here. Machine-readable: {AGREEMENT_FILE} in the report folder.</p>")
    return dash.Section("agreement", "Agreement with the paper", body)
