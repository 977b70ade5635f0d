"""Agreement of a study with the paper it reproduces: signs of Δ, collapses, and row order.

For a study whose study.json has ``paper`` values (docs/results-schema.md), on the table column
the paper's metric maps to (:func:`paper_column`):

- per row with a numeric paper value (the baseline row's too): paper Δ = paper(row) −
  paper(baseline row); our Δ is the table's (paired over (seed, image), with its bootstrap CI).
  Verdict ``agree`` when our CI excludes 0 on the paper's side, ``disagree`` when it excludes 0
  on the other side, ``undecided`` when it includes 0, when our Δ has no CI (fewer than 2
  pairs, or unpaired), or when the paper's Δ is exactly 0 (no direction to agree with);
- per row the paper reports as ``"collapse"``: ``agree`` when every seed of ours diverged
  (the table's ``collapse`` cell), ``disagree`` when seeds finished and none diverged,
  ``undecided`` when some diverged and some finished, or none finished yet; a row of ours that
  collapsed where the paper has a number is a ``disagree``;
- Kendall's τ-b between our row means and the paper's values over the rows that have both
  (ties counted as τ-b does: ``scipy.stats.kendalltau``'s default).

The result is a plain dict (JSON as written to ``agreement.json`` by the report).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.rows import Column

VERDICTS = ("agree", "disagree", "undecided")


def paper_column(columns: Sequence[Column], paper: dict[str, Any]) -> int | None:
    """Index of the table column the paper's numbers belong to: the paper's metric (or its
    Y-channel form), preferring a set named in the paper's ``setting``; else None."""
    pm = str(paper.get("metric") or "psnr")
    setting = str(paper.get("setting") or "")
    matches = [i for i, c in enumerate(columns) if c.metric in (pm, f"{pm}_y") or pm == c.key]
    in_setting = [i for i in matches if columns[i].set and columns[i].set in setting]
    return (in_setting or matches or [None])[0]


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Kendall's τ-b of two equally long sequences (O(n²) over pairs; rows are few).

    ``tau`` is NaN when fewer than 2 items or when either side is constant."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    n = len(a)
    out: dict[str, Any] = {"tau": math.nan, "n": n, "concordant": 0, "discordant": 0,
                           "ties_ours": 0, "ties_paper": 0}
    if n < 2:
        return out
    i, j = np.triu_indices(n, k=1)
    sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    prod = sa * sb
    conc, disc = int((prod > 0).sum()), int((prod < 0).sum())
    n0 = len(i)
    tie_a, tie_b = int((sa == 0).sum()), int((sb == 0).sum())
    denom = math.sqrt((n0 - tie_a) * (n0 - tie_b))
    out.update(concordant=conc, discordant=disc, ties_ours=tie_a, ties_paper=tie_b,
               tau=(conc - disc) / denom if denom > 0 else math.nan)
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        return None
    return float(v) if math.isfinite(float(v)) else None


def _sign_verdict(paper_delta: float, low: float, high: float) -> tuple[str, str]:
    if paper_delta == 0:
        return "undecided", "the paper's Δ is 0"
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undecided", "no CI for our Δ (fewer than 2 (seed, image) pairs)"
    if low <= 0 <= high:
        return "undecided", "our CI includes 0"
    ours_up = low > 0
    return ("agree", "same sign") if ours_up == (paper_delta > 0) else ("disagree", "opposite sign")


def _collapse_verdict(rec: dict[str, Any], cell: str) -> tuple[str, str]:
    finished, diverged = int(rec["finished"]), int(rec["diverged"])
    if cell == "collapse":
        return "agree", f"all {diverged} seeds diverged"
    if diverged and finished:
        return "undecided", f"{diverged} seeds diverged, {finished} finished"
    if finished:
        return "disagree", f"{finished} seeds finished, none diverged"
    return "undecided", "no seed finished or diverged yet"


def paper_agreement(table: pd.DataFrame, columns: Sequence[Column], base_row: int | None,
                    paper: dict[str, Any] | None) -> dict[str, Any] | None:
    """The agreement of an ablation table with its ``paper`` values (None without any)."""
    values = (paper or {}).get("values") or {}
    if not paper or not values or "paper" not in table.columns:
        return None
    idx = paper_column(columns, paper)
    if idx is None:
        return {"column": None, "rows": [], "kendall": kendall_tau_b([], []),
                "counts": dict.fromkeys(VERDICTS, 0),
                "note": f"no table column for the paper's metric '{paper.get('metric')}'"}
    col = columns[idx]
    k = col.key
    trained = table[~table["reference"].astype(bool)] if "reference" in table.columns else table
    base_paper = _number(trained.at[base_row, "paper"]) if base_row is not None and base_row in trained.index else None
    rows: list[dict[str, Any]] = []
    tau_ours, tau_paper = [], []
    for _, rec in trained.iterrows():
        pv = rec["paper"]
        if pv is None or (isinstance(pv, float) and math.isnan(pv)):
            continue
        mean = float(rec[f"{k}:mean"])
        cell = str(rec[f"{k}:cell"])
        item: dict[str, Any] = {
            "row": str(rec["row"]), "baseline": bool(rec["baseline"]), "paper": pv,
            "paper_delta": None, "mean": mean if math.isfinite(mean) else None,
            "delta": None, "ci_low": None, "ci_high": None, "pairs": int(rec[f"{k}:pairs"]),
            "collapse_row": pv == "collapse", "verdict": None, "reason": "",
        }
        number = _number(pv)
        if pv == "collapse":
            item["verdict"], item["reason"] = _collapse_verdict(rec, cell)
        elif cell == "collapse":
            item["verdict"], item["reason"] = "disagree", "every seed of ours diverged; the paper trains it"
        elif number is not None and not rec["baseline"] and base_paper is not None:
            pd_ = number - base_paper
            d, lo, hi = (float(rec[f"{k}:{f}"]) for f in ("delta", "ci_low", "ci_high"))
            item.update(paper_delta=pd_, delta=d if math.isfinite(d) else None,
                        ci_low=lo if math.isfinite(lo) else None, ci_high=hi if math.isfinite(hi) else None)
            item["verdict"], item["reason"] = _sign_verdict(pd_, lo, hi)
        elif number is not None and not rec["baseline"]:
            item["reason"] = "the baseline row has no paper value: no paper Δ"
        if number is not None and math.isfinite(mean):
            tau_ours.append(mean)
            tau_paper.append(number)
        rows.append(item)
    counts = {v: sum(1 for it in rows if it["verdict"] == v) for v in VERDICTS}
    return {"column": k, "metric": col.metric, "baseline": None if base_row is None else str(table.at[base_row, "row"]),
            "rows": rows, "kendall": kendall_tau_b(tau_ours, tau_paper), "counts": counts, "note": ""}


def agreement_note(agreement: dict[str, Any] | None) -> str | None:
    """One line for the table notes."""
    if agreement is None:
        return None
    if agreement["column"] is None:
        return f"agreement with the paper: {agreement['note']}"
    c = agreement["counts"]
    judged = [r for r in agreement["rows"] if r["verdict"] is not None]
    collapse = [r for r in judged if r["collapse_row"]]
    kt = agreement["kendall"]
    tau = "—" if not math.isfinite(kt["tau"]) else f"{kt['tau']:+.2f}"
    parts = [f"agreement with the paper on {agreement['column']}: sign of Δ vs the baseline row "
             f"{c['agree']} agree, {c['disagree']} disagree, {c['undecided']} undecided (CI includes 0 or no CI) "
             f"of {len(judged)} rows"]
    if collapse:
        parts.append(f"collapse rows: {sum(r['verdict'] == 'agree' for r in collapse)} of {len(collapse)} collapse here")
    parts.append(f"Kendall's τ-b of our row means vs the paper's = {tau} over {kt['n']} rows")
    return "; ".join(parts) + " (agreement.json)."
