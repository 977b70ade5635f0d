"""What an ablation table says, in words, for its notes: whether training beats the no-learning
reference, which rows differ from the baseline row beyond their paired CI, or that every row
ties (a finding to report, not a success)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.formatting import better, fmt_number
from resweep.analysis.rows import Column


def _ci_text(rec: dict[str, Any], c: Column, ci: float) -> str:
    low, high = rec[f"{c.key}:ci_low"], rec[f"{c.key}:ci_high"]
    interval = (f", {round(100 * ci)}% CI [{fmt_number(low, c.metric, signed=True)}, "
                f"{fmt_number(high, c.metric, signed=True)}]") if np.isfinite(low) else ""
    unit = " dB" if c.metric.startswith("psnr") else ""
    return f"{fmt_number(rec[f'{c.key}:delta'], c.metric, signed=True)}{unit}{interval}"


def finding_notes(table: pd.DataFrame, columns: Sequence[Column], base_row: int | None, ci: float) -> list[str]:
    """What the table says, in words: training vs the no-learning reference, then which rows
    differ from the baseline row beyond the CI (or that every row ties)."""
    if base_row is None or not columns or table.at[base_row, "finished"] == 0:
        return []
    notes: list[str] = []
    fields = ("delta", "ci_low", "ci_high", "sig", "pairs")
    recs = table[["row", "reference", "finished", *(f"{c.key}:{f}" for c in columns for f in fields)]].to_dict("records")
    base_name = str(table.at[base_row, "row"])
    ref = next((r for r in recs if r["reference"]), None)
    first = columns[0]
    column_name = f"{first.title} on {first.set}" if first.set else first.title
    if ref is not None and np.isfinite(ref[f"{first.key}:delta"]):
        d = f"{first.key}:delta"
        gain = {**ref, d: -ref[d], f"{first.key}:ci_low": -ref[f"{first.key}:ci_high"],
                f"{first.key}:ci_high": -ref[f"{first.key}:ci_low"]}  # baseline row − reference
        good = gain[d] > 0 if better(first.metric) == "max" else gain[d] < 0
        if good and ref[f"{first.key}:sig"]:
            notes.append(f"the baseline row '{base_name}' beats {ref['row']} by {_ci_text(gain, first, ci)} "
                         f"({column_name})")
        else:
            notes.append(f"the baseline row '{base_name}' does NOT clearly beat {ref['row']} "
                         f"({column_name}: {_ci_text(gain, first, ci)}): training learned little at this "
                         "budget, so the Δs between rows say little about the methods")
    others = [r for i, r in enumerate(recs) if i != base_row and not r["reference"] and r["finished"]]
    compared = [r for r in others if any(r[f"{c.key}:pairs"] > 0 for c in columns)]
    if not compared:
        return notes
    effects = [(r, c) for r in compared for c in columns if r[f"{c.key}:sig"]]
    if not effects:
        notes.append(f"every row ties with the baseline row '{base_name}': no Δ has a "
                     f"{round(100 * ci)}% paired CI that excludes 0, in any column. At this budget "
                     "the study finds no effect (a finding, not a success).")
        return notes
    on_first = [(r, c) for r, c in effects if c == first]
    if on_first:
        parts = [f"{r['row']} {_ci_text(r, c, ci)}" for r, c in on_first]
        where = f"{column_name}, "
    else:
        parts = [f"{r['row']} {_ci_text(r, c, ci)} ({c.title} on {c.set})" if c.set else
                 f"{r['row']} {_ci_text(r, c, ci)} ({c.title})" for r, c in effects]
        where = ""
    notes.append(f"effects whose {round(100 * ci)}% paired CI excludes 0 ({where}Δ vs '{base_name}'): "
                 + "; ".join(parts))
    return notes
