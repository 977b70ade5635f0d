"""Rendering an ablation table (the DataFrame of :func:`resweep.analysis.ablation.ablation_table`)
as Markdown, LaTeX (booktabs) and HTML, with its notes; and any small frame as an HTML table.
Every user-supplied string is escaped for its target format."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.agreement import paper_column
from resweep.analysis.formatting import better, fmt_number, html_escape, latex_escape, md_escape
from resweep.analysis.rows import Column
from resweep.analysis.stats import DEFAULT_CI


# --------------------------------------------------------------------------- display model
@dataclass
class _Cell:
    text: str
    cls: str = ""
    num: bool = False  # right-aligned


@dataclass
class _Layout:
    groups: list[tuple[str, int]]  # top header: (title, span); "" = info column (rowspan 2)
    headers: list[str]
    rows: list[list[_Cell]]
    row_classes: list[str]
    caption: str
    notes: list[str]


_MEMO: dict[int, tuple[pd.DataFrame, _Layout]] | None = None


@contextlib.contextmanager
def reuse_layouts() -> Iterator[None]:
    """Within the block, the renderers lay out each table once (one layout of a 10^4-row
    table costs seconds; the report renders it as Markdown, LaTeX and HTML). The tables must
    not change inside the block."""
    global _MEMO
    outer, _MEMO = _MEMO, {}
    try:
        yield
    finally:
        _MEMO = outer


def _layout(table: pd.DataFrame) -> _Layout:
    if _MEMO is None:
        return _compute_layout(table)
    hit = _MEMO.get(id(table))
    if hit is None or hit[0] is not table:
        hit = _MEMO[id(table)] = (table, _compute_layout(table))
    return hit[1]


def _compute_layout(table: pd.DataFrame) -> _Layout:
    attrs = table.attrs
    columns = [Column(s, m) for s, m in attrs.get("columns", [])]
    titles = attrs.get("knob_titles", {})
    shown = attrs.get("shown_knobs", [])
    info: list[tuple[str, Any]] = []  # (header, getter)
    if attrs.get("has_variants"):
        info.append(("variant", lambda r: r["label"]))
    for k in shown:
        info.append((titles.get(k, k), lambda r, k=k: r[f"param.{k}"]))
    if not info:
        info.append(("row", lambda r: r["row"]))
    counts = [("n", "finished"), ("diverged", "diverged")]
    for col in ("running", "pruned", "errored"):
        if int(table[col].sum()):
            counts.append((col, col))

    paper = attrs.get("paper")
    robust = bool(attrs.get("robust"))
    paper_after: int | None = None
    if paper and columns:
        found = paper_column(columns, paper)
        paper_after = len(columns) - 1 if found is None else found

    # per column: (group title, header); group "" = a single column spanning both header rows
    cols: list[tuple[str, str]] = [("", h) for h, _ in info] + [("", h) for h, _ in counts]
    paper_title = f"paper {paper.get('table', '')}".strip() if paper else ""
    for i, c in enumerate(columns):
        group = c.set if c.set is not None else c.title
        cols += [(group, c.title), (group, "Δ")]
        if robust:
            cols += [(group, f"{c.title} IQM"), (group, f"{c.title} P(> base)")]
        if paper_after == i:
            cols.append((group, paper_title))
    if paper and paper_after is None:
        cols.append(("", paper_title))
    groups: list[tuple[str, int]] = []
    for group, _ in cols:
        if groups and group and groups[-1][0] == group:
            groups[-1] = (group, groups[-1][1] + 1)
        else:
            groups.append((group, 1))
    headers = [h for _, h in cols]

    out_rows, classes = [], []
    unused = (":mean", ":std", ":n", ":ci_low", ":ci_high", ":pairs")  # not drawn: 10^4 rows x fewer columns
    records = table[[c for c in table.columns if not str(c).endswith(unused)]].to_dict("records")
    if "reference" in table.columns:  # the no-learning reference first, as SR papers list bicubic
        records = [r for r in records if r["reference"]] + [r for r in records if not r["reference"]]
    for rec in records:
        is_reference = bool(rec.get("reference"))
        cells = [_Cell(str(get(rec))) for _, get in info]
        if is_reference:  # the knob/variant columns hold nothing for it: its name goes first
            cells = [_Cell(str(rec["row"]))] + [_Cell("") for _ in info[1:]]
        cells += [_Cell("" if is_reference else str(int(rec[col])), num=True) for _, col in counts]
        for i, c in enumerate(columns):
            text = rec[f"{c.key}:cell"]
            cls = "collapse" if text == "collapse" else ""
            cells.append(_Cell(text, cls=cls, num=True))
            cells.append(_delta_cell(rec, c, attrs))
            if robust:
                cells += _robust_cells(rec, c)
            if paper_after == i:
                cells.append(_paper_cell(rec, c.metric))
        if paper and paper_after is None:
            cells.append(_paper_cell(rec, str(paper.get("metric") or "")))
        out_rows.append(cells)
        classes.append("baseline" if rec["baseline"] else "reference" if is_reference else "")

    notes = _table_notes(table)
    caption = f"Ablation: {attrs.get('study', '')}"
    return _Layout(groups, headers, out_rows, classes, caption, notes)


def _table_notes(table: pd.DataFrame) -> list[str]:
    """The notes under an ablation table: they depend on its attributes, not on its rows."""
    attrs = table.attrs
    paper = attrs.get("paper")
    pct = int(round(100 * attrs.get("ci", DEFAULT_CI)))
    statuses = "/".join(attrs.get("statuses", ["finished"]))
    notes = [
        f"Mean ± std (ddof={attrs.get('ddof', 1)}) over seeds of each trial's final metric "
        f"({statuses} trials; n = seeds used).",
        f"Δ = mean over (seed, image) pairs of row − baseline row '{attrs.get('baseline_name')}' "
        f"({attrs.get('baseline_reason')}); * = the {pct}% paired bootstrap CI "
        f"({attrs.get('n_boot')} resamples, seed {attrs.get('seed')}) excludes 0. Rows with no pair "
        "(no common seed, or no per-image values): Δ of the cell means, unmarked.",
        "collapse = every seed of the row diverged; diverged seeds are left out of the other means.",
    ]
    if "reference" in table.columns and table["reference"].any():
        name = str(table.loc[table["reference"], "row"].iloc[0])
        notes.append(
            f"{name}: the degraded input itself (upsampled with MATLAB-exact bicubic for SR), scored by "
            "the same evaluation (sets, images, metric code) as the trained rows; its Δ is reference − "
            "baseline row over the baseline row's (seed, image) pairs: the scale of every other Δ."
        )
    if attrs.get("robust"):
        notes.append(
            f"IQM = interquartile mean of the final per-image values over (seed, image) (middle 50%); "
            f"P(> base) = probability that a seed of the row beats a seed of the baseline row on an image "
            f"(ties 1/2), averaged over images (rliable, Agarwal et al. 2021); [ ] = {pct}% percentile "
            f"bootstrap CI, seeds resampled within each image ({attrs.get('n_boot')} resamples, seed "
            f"{attrs.get('seed')}); no CI with one seed."
        )
    if paper:
        notes.append(
            f"paper: {paper.get('table', '')} {paper.get('setting', '')}, metric {paper.get('metric', '')}"
            " (as published)."
        )
    notes += attrs.get("notes", [])
    return notes


def _robust_cells(rec: dict[str, Any], c: Column) -> list[_Cell]:
    def interval(value: float, low: float, high: float, fmt: Any) -> str:
        if not np.isfinite(value):
            return "—"
        return fmt(value) + (f" [{fmt(low)}, {fmt(high)}]" if np.isfinite(low) else "")

    iqm = interval(rec[f"{c.key}:iqm"], rec[f"{c.key}:iqm_low"], rec[f"{c.key}:iqm_high"],
                   lambda v: fmt_number(v, c.metric))
    poi = ("baseline" if rec["baseline"] else
           interval(rec[f"{c.key}:poi"], rec[f"{c.key}:poi_low"], rec[f"{c.key}:poi_high"], lambda v: f"{v:.2f}"))
    return [_Cell(iqm, num=True), _Cell(poi, cls="ref" if rec["baseline"] else "", num=True)]


def _delta_cell(rec: dict[str, Any], c: Column, attrs: dict[str, Any]) -> _Cell:
    if rec["baseline"]:
        return _Cell("baseline", cls="ref", num=True)
    d = rec[f"{c.key}:delta"]
    if not np.isfinite(d):
        return _Cell("—", num=True)
    sig = bool(rec[f"{c.key}:sig"])
    good = d > 0 if _better(c.metric) == "max" else d < 0
    cls = ("better" if good else "worse") if sig else ""
    return _Cell(fmt_number(d, c.metric, signed=True) + ("*" if sig else ""), cls=cls, num=True)


@functools.lru_cache(maxsize=256)
def _better(metric: str) -> str:
    return better(metric)


def _paper_cell(rec: dict[str, Any], metric: str) -> _Cell:
    value = rec.get("paper")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _Cell("—", cls="paper", num=True)
    if isinstance(value, int | float):
        return _Cell(fmt_number(float(value), metric), cls="paper", num=True)
    return _Cell(str(value), cls="paper collapse" if value == "collapse" else "paper", num=True)


# --------------------------------------------------------------------------- renderers
def to_markdown(table: pd.DataFrame) -> str:
    lay = _layout(table)
    heads = []
    set_of = _column_groups(lay)
    for h, g in zip(lay.headers, set_of, strict=True):
        heads.append(f"{g} {h}".strip() if g and h != "Δ" else h)
    lines = [f"**{md_escape(lay.caption)}**", ""]
    lines.append("| " + " | ".join(md_escape(h) for h in heads) + " |")
    lines.append("|" + "|".join("---:" if _is_num_col(lay, i) else "---" for i in range(len(heads))) + "|")
    for cells, cls in zip(lay.rows, lay.row_classes, strict=True):
        texts = [md_escape(c.text) for c in cells]
        if cls == "baseline":
            texts[0] = f"**{texts[0]}**"
        elif cls == "reference":
            texts[0] = f"*{texts[0]}*"
        lines.append("| " + " | ".join(texts) + " |")
    lines.append("")
    lines += [md_escape(n) + "  " for n in lay.notes]
    return "\n".join(lines) + "\n"


def to_text(table: pd.DataFrame, width: int = 100) -> str:
    """Plain aligned text for a terminal (what ``resweep demo`` prints): no markup to read past."""
    import textwrap

    lay = _layout(table)
    heads = [f"{g} {h}".strip() if g and h != "Δ" else h for h, g in zip(lay.headers, _column_groups(lay), strict=True)]
    body = [[c.text for c in cells] for cells in lay.rows]
    widths = [max(len(x) for x in [h, *(r[i] for r in body)]) for i, h in enumerate(heads)]

    def line(texts: list[str]) -> str:
        return "  ".join(t.rjust(w) if _is_num_col(lay, i) else t.ljust(w)
                         for i, (t, w) in enumerate(zip(texts, widths, strict=True))).rstrip()

    out = [lay.caption, line(heads), "  ".join("-" * w for w in widths)]
    out += [line(texts) for texts in body]
    out.append("")
    for note in lay.notes:
        out += textwrap.wrap(note, width, initial_indent="- ", subsequent_indent="  ")
    return "\n".join(out) + "\n"


def _column_groups(lay: _Layout) -> list[str]:
    out: list[str] = []
    for title, span in lay.groups:
        out += [title] * span
    return out


def _is_num_col(lay: _Layout, i: int) -> bool:
    return bool(lay.rows) and all(r[i].num for r in lay.rows)


def to_latex(table: pd.DataFrame, label: str = "tab:ablation") -> str:
    lay = _layout(table)
    ncols = len(lay.headers)
    align = "".join("r" if _is_num_col(lay, i) else "l" for i in range(ncols))
    out = [
        "% generated by resweep; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(lay.caption)}}}",
        f"\\label{{{label}}}",
        "\\small",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
    ]
    if any(t for t, _ in lay.groups):
        top, rules, col = [], [], 1
        for title, span in lay.groups:
            if title:
                top.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(title)}}}")
                rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
            else:
                top += [""] * span
            col += span
        out.append(" & ".join(top) + " \\\\")
        out.append(" ".join(rules))
    out.append(" & ".join(latex_escape(h) for h in lay.headers) + " \\\\")
    out.append("\\midrule")
    for cells, cls in zip(lay.rows, lay.row_classes, strict=True):
        texts = []
        for c in cells:
            t = latex_escape(c.text)
            if c.text.endswith("*") and c.cls in ("better", "worse"):
                t = latex_escape(c.text[:-1]) + "$^{*}$"
            texts.append(t)
        if cls == "baseline":
            texts[0] = f"\\textit{{{texts[0]}}}"
        out.append(" & ".join(texts) + " \\\\")
        if cls == "reference":  # the no-learning floor, ruled off from the trained rows
            out.append("\\midrule")
    out += ["\\bottomrule", "\\end{tabular}"]
    out.append("\\par\\smallskip\\footnotesize " + " ".join(latex_escape(n) for n in lay.notes))
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def to_html(table: pd.DataFrame, table_id: str = "ablation", notes: bool = True) -> str:
    """An HTML fragment (``<table>``, + its notes unless ``notes=False``), every user string escaped."""
    lay = _layout(table)
    out = [f'<table class="ablation" id="{html_escape(table_id)}">',
           f"<caption>{html_escape(lay.caption)}</caption>", "<thead>"]
    two_rows = any(t for t, _ in lay.groups)
    if two_rows:
        top, i = [], 0
        for title, span in lay.groups:
            if title:
                top.append(f'<th colspan="{span}" class="group">{html_escape(title)}</th>')
            else:
                for j in range(i, i + span):
                    top.append(f'<th rowspan="2">{html_escape(lay.headers[j])}</th>')
            i += span
        out.append("<tr>" + "".join(top) + "</tr>")
        sub, i = [], 0
        for title, span in lay.groups:
            if title:
                sub += [f"<th>{html_escape(h)}</th>" for h in lay.headers[i:i + span]]
            i += span
        out.append("<tr>" + "".join(sub) + "</tr>")
    else:
        out.append("<tr>" + "".join(f"<th>{html_escape(h)}</th>" for h in lay.headers) + "</tr>")
    out.append("</thead><tbody>")
    for cells, cls in zip(lay.rows, lay.row_classes, strict=True):
        tds = []
        for c in cells:
            classes = " ".join(x for x in (c.cls, "num" if c.num else "") if x)
            attr = f' class="{classes}"' if classes else ""
            tds.append(f"<td{attr}>{html_escape(c.text)}</td>")
        out.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>" if cls else "<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    if notes:
        out.append(notes_html(table))
    return "\n".join(out) + "\n"


def notes_html(table: pd.DataFrame) -> str:
    """The notes under an ablation table (semantics, baseline, partial-study counts)."""
    return '<ul class="table-notes">' + "".join(f"<li>{html_escape(n)}</li>" for n in _table_notes(table)) + "</ul>"


def frame_to_html(df: pd.DataFrame, table_id: str, max_rows: int | None = None, classes: str = "plain") -> str:
    """Any small frame as an escaped HTML table (numbers with 4 significant digits)."""
    shown = df if max_rows is None else df.head(max_rows)
    head = "".join(f"<th>{html_escape(c)}</th>" for c in shown.columns)
    # column by column (what iterating the rows would give, cell for cell; 10^5 cells at 10^4 trials)
    columns = [_td_column(shown.iloc[:, j]) for j in range(shown.shape[1])]
    body = ["<tr>" + "".join(tds) + "</tr>" for tds in zip(*columns, strict=True)] if columns else \
        ["<tr></tr>"] * len(shown)
    more = ""
    if max_rows is not None and len(df) > max_rows:
        more = f'<p class="note">{len(df) - max_rows} more rows in the CSV file.</p>'
    return (f'<table class="{html_escape(classes)}" id="{html_escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>{more}\n")


def _td_column(series: pd.Series) -> list[str]:
    """The ``<td>`` of each cell of one column of :func:`frame_to_html`."""
    if isinstance(series.dtype, np.dtype) and series.dtype.kind == "f":  # numbers: nothing to escape
        return ['<td class="num">' + ("—" if not math.isfinite(v) else f"{v:.4g}") + "</td>"
                for v in series.tolist()]
    return [_td(v) for v in series]


def _td(v: Any) -> str:
    if isinstance(v, float | np.floating):
        text, cls = ("—" if not np.isfinite(v) else f"{v:.4g}"), ' class="num"'
    elif isinstance(v, int | np.integer) and not isinstance(v, bool):
        text, cls = str(v), ' class="num"'
    else:
        text, cls = ("" if v is None else str(v)), ""
    return f"<td{cls}>{html_escape(text)}</td>"
