"""The dashboard: one self-contained HTML file (plotly.js inlined, no network) per study.

This module assembles the page (sections, navigation, styles, the error-capture script).
The figures are built in :mod:`resweep.analysis.figures` on the plain plotly.js specs of
:mod:`resweep.analysis.plotly_spec`; the visual-comparison crops in
:mod:`resweep.analysis.comparison_crops`. Their public names are re-exported here, so
``from resweep.analysis import dashboard as dash; dash.curves_figure(...)`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from resweep.analysis.comparison_crops import CROP, find_image, visual_comparison
from resweep.analysis.figures import (
    CURVE_POINT_BUDGET,
    MAX_COLOUR_GROUPS,
    MAX_CURVE_METRICS,
    MIN_CURVE_POINTS,
    PALETTE,
    VIRIDIS,
    Colouring,
    colour_groups,
    curves_figure,
    delta_figure,
    importance_figure,
    parcoords_figure,
    pareto_figure,
)
from resweep.analysis.plotly_spec import PLOT_CONFIG, Figure, script_json
from resweep.analysis.tables import frame_to_html, html_escape

__all__ = [
    "CROP",
    "CSS",
    "CURVE_POINT_BUDGET",
    "MAX_COLOUR_GROUPS",
    "MAX_CURVE_METRICS",
    "MIN_CURVE_POINTS",
    "PALETTE",
    "PLOT_CONFIG",
    "VIRIDIS",
    "Colouring",
    "Figure",
    "Page",
    "Section",
    "colour_groups",
    "curves_figure",
    "delta_figure",
    "find_image",
    "frame_block",
    "frame_to_html",
    "importance_figure",
    "parcoords_figure",
    "pareto_figure",
    "render_page",
    "script_json",
    "table_block",
    "visual_comparison",
]


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
