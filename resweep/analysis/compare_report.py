"""The report of ``resweep compare``: the side-by-side table as text, Markdown, HTML and CSV, the
best configuration per study, and a dashboard (plotly, offline, every user string escaped).

Layout of the output folder::

    index.html                  the dashboard
    compare.txt                 the table as printed by ``resweep compare``
    tables/compare.{md,html,csv}
    tables/best.csv             the best configuration of each study
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from resweep.analysis import dashboard as dash
from resweep.analysis.compare import Comparison, compare_studies, cross_cell
from resweep.analysis.figures import PALETTE
from resweep.analysis.formatting import fmt_number, html_escape, md_escape
from resweep.analysis.load import StudyData
from resweep.analysis.plotly_spec import Figure, plot_text
from resweep.analysis.stats import DEFAULT_N_BOOT, DEFAULT_SEED


@dataclass
class CompareReport:
    index_path: Path
    out_dir: Path
    comparison: Comparison
    text: str
    files: list[Path] = field(default_factory=list)


def _grid(cmp: Comparison) -> tuple[list[str], list[list[str]], list[bool]]:
    """(headers, rows of cell text, numeric column flags)."""
    heads, num = ["row"], [False]
    for c in cmp.columns:
        name = f"{c.set} {c.title}" if c.set else c.title
        for lab in cmp.studies:
            heads += [f"{lab}: {name}", f"{lab}: Δ base"]
            num += [True, True]
        for lab in cmp.studies[1:]:
            heads.append(f"{name} Δ {lab} − {cmp.studies[0]}")
            num.append(True)
    body = []
    for rec in cmp.table.to_dict("records"):
        cells = [str(rec["row"])]
        for c in cmp.columns:
            for i in range(len(cmp.studies)):
                cells.append(str(rec[f"{c.key}@{i}:cell"]) or "")
                if not rec[f"s{i}:row"]:
                    cells.append("")
                elif rec[f"s{i}:baseline"]:
                    cells.append("baseline")
                else:
                    sig = "*" if rec[f"{c.key}@{i}:sig"] and np.isfinite(rec[f"{c.key}@{i}:delta"]) else ""
                    cells.append(fmt_number(rec[f"{c.key}@{i}:delta"], c.metric, signed=True) + sig)
            for i in range(1, len(cmp.studies)):
                cells.append(cross_cell(rec, c.key, i, c.metric))
        body.append(cells)
    return heads, body, num


def to_text(cmp: Comparison, width: int = 100) -> str:
    heads, body, num = _grid(cmp)
    widths = [max(len(x) for x in [h, *(r[i] for r in body)]) for i, h in enumerate(heads)]

    def line(texts: list[str]) -> str:
        return "  ".join(t.rjust(w) if num[i] else t.ljust(w) for i, (t, w) in enumerate(zip(texts, widths, strict=True))).rstrip()

    out = [f"Compare: {' vs '.join(cmp.studies)}", line(heads), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    out += ["", "Best configuration per study:"]
    for rec in cmp.best.to_dict("records"):
        metric = cmp.columns[0].metric if cmp.columns else ""
        out.append(f"  {rec['study']}: {rec['row'] or '—'}  {rec['column']} = {fmt_number(rec['mean'], metric)}"
                   f"  ({rec['configuration']})")
    out.append("")
    for note in cmp.notes:
        out += textwrap.wrap(note, width, initial_indent="- ", subsequent_indent="  ")
    return "\n".join(out) + "\n"


def to_markdown(cmp: Comparison) -> str:
    heads, body, num = _grid(cmp)
    lines = [f"**Compare: {md_escape(' vs '.join(cmp.studies))}**", "",
             "| " + " | ".join(md_escape(h) for h in heads) + " |",
             "|" + "|".join("---:" if n else "---" for n in num) + "|"]
    lines += ["| " + " | ".join(md_escape(t) for t in r) + " |" for r in body]
    lines += ["", *(md_escape(n) + "  " for n in cmp.notes)]
    return "\n".join(lines) + "\n"


def to_html(cmp: Comparison) -> str:
    heads, body, num = _grid(cmp)
    out = ['<table class="ablation" id="compare"><thead><tr>'
           + "".join(f"<th>{html_escape(h)}</th>" for h in heads) + "</tr></thead><tbody>"]
    for r in body:
        tds = []
        for t, n in zip(r, num, strict=True):
            tds.append(f'<td class="num">{html_escape(t)}</td>' if n else f"<td>{html_escape(t)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    out.append('<ul class="table-notes">' + "".join(f"<li>{html_escape(n)}</li>" for n in cmp.notes) + "</ul>")
    return "\n".join(out) + "\n"


def means_figure(cmp: Comparison) -> Figure | None:
    if not cmp.columns:
        return None
    c, t = cmp.columns[0], cmp.table
    traces = []
    for i, lab in enumerate(cmp.studies):
        mean = t[f"{c.key}@{i}:mean"].astype(float).to_numpy()
        std = np.nan_to_num(t[f"{c.key}@{i}:std"].astype(float).to_numpy())
        traces.append({"type": "scatter", "mode": "markers", "name": plot_text(lab),
                       "x": [plot_text(r) for r in t["row"]], "y": mean,
                       "error_y": {"type": "data", "array": std}, "marker": {"size": 9, "color": PALETTE[i % len(PALETTE)]},
                       "hovertemplate": "%{x}<br>%{y:.4f} ± %{error_y.array:.4f}<extra>" + plot_text(lab) + "</extra>"})
    layout = {"title": {"text": f"{plot_text(c.key)}: mean ± std over seeds, per study"},
              "xaxis": {"automargin": True}, "yaxis": {"title": {"text": plot_text(c.title)}}}
    return Figure("fig-compare-means", traces, layout, height=440)


def delta_figure(cmp: Comparison) -> Figure | None:
    if not cmp.columns or len(cmp.studies) < 2:
        return None
    c, t = cmp.columns[0], cmp.table
    traces = []
    for i in range(1, len(cmp.studies)):
        pre = f"{c.key}@{i}-0"
        d = t[f"{pre}:diff"].astype(float).to_numpy()
        lo, hi = t[f"{pre}:low"].astype(float).to_numpy(), t[f"{pre}:high"].astype(float).to_numpy()
        traces.append({"type": "scatter", "mode": "markers", "name": plot_text(f"{cmp.studies[i]} − {cmp.studies[0]}"),
                       "x": [plot_text(r) for r in t["row"]], "y": d,
                       "error_y": {"type": "data", "symmetric": False, "array": np.nan_to_num(hi - d),
                                   "arrayminus": np.nan_to_num(d - lo)},
                       "marker": {"size": 9, "color": PALETTE[i % len(PALETTE)]}})
    layout = {"title": {"text": f"Δ {plot_text(c.key)} between studies (paired over seed, image; 95% CI)"},
              "xaxis": {"automargin": True},
              "yaxis": {"title": {"text": f"Δ {plot_text(c.title)}"}, "zeroline": True, "zerolinecolor": "#444"}}
    return Figure("fig-compare-delta", traces, layout, height=440)


def build_comparison(
    studies: Sequence[str | Path | StudyData],
    out_dir: str | Path,
    *,
    metric: str | Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> CompareReport:
    """Compare ``studies`` (see :func:`resweep.analysis.compare.compare_studies`) and write the report."""
    cmp = compare_studies(studies, metric, sets, n_boot=n_boot, seed=seed)
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def write(rel: str, text: str) -> None:
        path = out / rel
        path.write_text(text, encoding="utf-8")
        files.append(path)

    text = to_text(cmp)
    html_table = to_html(cmp)
    write("compare.txt", text)
    write("tables/compare.md", to_markdown(cmp))
    write("tables/compare.html", "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<style>{dash.CSS}</style></head><body><main>{html_table}</main></body></html>\n")
    write("tables/compare.csv", cmp.table.to_csv(index=False))
    write("tables/best.csv", cmp.best.to_csv(index=False))

    subtitle = "".join(f"<p>{html_escape(lab)}: {html_escape(d)}</p>" for lab, d in zip(cmp.studies, cmp.dirs, strict=True))
    page = dash.Page(title=f"Compare: {' vs '.join(cmp.studies)}", subtitle=subtitle)
    page.sections.append(dash.Section("side-by-side", "Rows side by side", dash.table_block(html_table)))
    page.sections.append(dash.Section("best", "Best configuration per study", dash.frame_block(cmp.best, "best")))
    for sid, title, fig in (("delta", "Δ between studies", delta_figure(cmp)),
                            ("means", "Means per study", means_figure(cmp))):
        if fig is not None:
            page.sections.append(dash.Section(sid, title, fig.html()))
    agreements = []
    for lab, res in zip(cmp.studies, cmp.results, strict=True):
        a = res.table.attrs.get("agreement")
        if a and a.get("column"):
            c = a["counts"]
            tau = a["kendall"]["tau"]
            agreements.append({"study": lab, "column": a["column"], "agree": c["agree"], "disagree": c["disagree"],
                               "undecided": c["undecided"], "kendall_tau_b": tau})
    if agreements:
        page.sections.append(dash.Section("agreement", "Agreement with the paper, per study",
                                          dash.frame_block(pd.DataFrame(agreements), "agreement")))
    index = out / "index.html"
    index.write_text(dash.render_page(page), encoding="utf-8")
    files.append(index)
    return CompareReport(index, out, cmp, text, files)
