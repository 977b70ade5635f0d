"""How a study's trials become ablation-table rows and columns, and which row is the baseline.

Rows: one per variant label and/or combination of knob values (``assign_rows``); columns: one
per (evaluation set, metric) (``resolve_columns``); the baseline row: study.json's ``baseline``,
else the row with every knob off, else the first (``choose_baseline``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.formatting import metric_title
from resweep.analysis.load import (
    OFF_LABELS,
    OFF_VALUES,
    StudyData,
    display_column,
    display_value,
    parse_value,
    sort_key,
)


# --------------------------------------------------------------------------- rows
@dataclass
class Rows:
    """How trials map to table rows."""

    trial_row: pd.Series  # row number per trial (index of trials)
    frame: pd.DataFrame  # one line per row: row, label, param.<knob> display values
    shown_knobs: list[str]  # knobs that get a column (vary between rows)
    knob_titles: dict[str, str]
    has_variants: bool


def short_names(paths: Sequence[str]) -> dict[str, str]:
    """Shortest dotted suffix of each path that is unique among ``paths``."""
    out = {}
    for path in paths:
        parts = path.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if sum(1 for p in paths if p == cand or p.endswith("." + cand)) == 1:
                out[path] = cand
                break
        else:
            out[path] = path
    return out


def assign_rows(data: StudyData) -> Rows:
    trials = data.trials
    knobs = [k for k in data.knobs if f"param.{k}" in trials.columns]
    has_variants = bool(data.variants) or bool((trials["label"] != "").any())
    keys = pd.DataFrame(index=trials.index)
    if has_variants:
        keys["label"] = trials["label"]
    for k in knobs:
        keys[f"param.{k}"] = display_column(trials[f"param.{k}"])
    key_cols = list(keys.columns)
    if key_cols and len(trials):
        group = keys.groupby(key_cols, sort=False, dropna=False).ngroup()
        uniq = keys.assign(_g=group.values).drop_duplicates("_g").sort_values("_g")
    else:  # no knobs at all: one row holds every trial
        group = pd.Series(0, index=trials.index)
        uniq = pd.DataFrame({"_g": [0]}) if len(trials) else pd.DataFrame({"_g": []})
    frame = uniq.drop(columns="_g").reset_index(drop=True)
    if "label" not in frame.columns:
        frame["label"] = ""

    # rows of variants not started yet: shown with zero counts rather than silently missing
    started = set(frame["label"])
    missing = [v for v in data.variants if v not in started]
    if missing:
        extra = pd.DataFrame({"label": missing})
        for k in knobs:
            extra[f"param.{k}"] = ""
        frame = pd.concat([frame, extra], ignore_index=True)

    if has_variants:
        varying = frame.groupby("label")[[f"param.{k}" for k in knobs]].nunique() if knobs else None
        shown = [k for k in knobs if varying is not None and (varying[f"param.{k}"] > 1).any()]
    else:
        shown = [k for k in knobs if frame[f"param.{k}"].nunique() > 1] or list(knobs)
    titles = short_names(shown)

    # order: variants as listed in study.json, then knob values (off first, numbers by value)
    variant_pos = {v: i for i, v in enumerate(data.variants)}
    order_keys = []
    for i, rec in enumerate(frame.to_dict("records")):
        key: list[Any] = []
        if has_variants:
            key.append(variant_pos.get(rec["label"], len(variant_pos)))
            key.append(rec["label"] if rec["label"] not in variant_pos else "")
        key.extend(sort_key(rec[f"param.{k}"]) for k in knobs)
        key.append(i)
        order_keys.append(tuple(key))
    order = sorted(range(len(frame)), key=lambda i: order_keys[i])
    remap = np.empty(len(frame), dtype=np.int64)
    remap[order] = np.arange(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    trial_row = pd.Series(remap[group.to_numpy()] if len(trials) else [], index=trials.index, dtype=np.int64)

    def row_name(rec: dict[str, Any]) -> str:
        knob_part = ", ".join(f"{titles[k]}={rec[f'param.{k}']}" for k in shown if rec[f"param.{k}"] != "")
        if has_variants:
            return f"{rec['label']} ({knob_part})" if knob_part else str(rec["label"])
        return knob_part or "all trials"

    frame.insert(0, "row", [row_name(r) for r in frame.to_dict("records")])
    # two rows must never share a name (knobs hidden because constant cannot collide; guard anyway)
    if frame["row"].duplicated().any():
        dup = frame["row"].duplicated(keep=False)
        frame.loc[dup, "row"] = frame.loc[dup, "row"] + " #" + frame.index[dup].astype(str)
    return Rows(trial_row=trial_row, frame=frame, shown_knobs=shown, knob_titles=titles, has_variants=has_variants)


# --------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class Column:
    set: str | None  # evaluation set, or None for a plain reported metric (time_per_step)
    metric: str

    @property
    def key(self) -> str:
        return f"eval.{self.set}.{self.metric}" if self.set is not None else self.metric

    @property
    def final(self) -> str:
        return f"final.{self.key}"

    @property
    def title(self) -> str:
        return metric_title(self.metric)


def default_metrics(data: StudyData) -> list[str]:
    """PSNR/SSIM on the Y channel for SR tasks, RGB for denoising; NIQE too where an evaluation
    set computed it (it is opt-in per set: a set without it simply has no NIQE column)."""
    return (["psnr_y", "ssim_y"] if data.is_sr else ["psnr", "ssim"]) + ["niqe"]


def resolve_columns(
    data: StudyData, metric: str | Sequence[str] | None = None, sets: Sequence[str] | None = None
) -> list[Column]:
    cols = set(data.trials.columns)
    all_sets = data.eval_sets
    if sets is not None:
        unknown = [s for s in sets if s not in all_sets]
        if unknown:
            raise ValueError(f"unknown evaluation set(s) {unknown}; the study has {all_sets}")
        use_sets = list(sets)
    else:
        use_sets = all_sets
    explicit = metric is not None
    metrics = [metric] if isinstance(metric, str) else list(metric) if metric is not None else default_metrics(data)
    out: list[Column] = []
    per_set: list[str] = []
    for m in metrics:
        if m.startswith("eval.") and f"final.{m}" in cols:
            s, name = m[5:].rsplit(".", 1)
            out.append(Column(s, name))
        elif any(f"final.eval.{s}.{m}" in cols for s in use_sets):
            per_set.append(m)
        elif f"final.{m}" in cols:
            out.append(Column(None, m))
        elif not explicit and m.endswith("_y") and any(f"final.eval.{s}.{m[:-2]}" in cols for s in use_sets):
            per_set.append(m[:-2])  # no Y-channel metric reported: fall back to RGB
        elif explicit:
            known = sorted({c[6:] for c in cols if c.startswith("final.")})
            raise ValueError(f"metric '{m}' is not in trials.parquet; reported: {known}")
    set_cols = [Column(s, m) for s in use_sets for m in per_set if f"final.eval.{s}.{m}" in cols]
    out = set_cols + out
    if not out and not explicit:  # no evaluation sets: the objectives are the columns
        out = [Column(None, o["metric"]) for o in data.objectives if f"final.{o['metric']}" in cols]
    return out


# --------------------------------------------------------------------------- baseline
def _off(text: str) -> bool:
    return text.strip().lower() in OFF_VALUES


def choose_baseline(
    rows: Rows, data: StudyData, baseline: str | int | None = None
) -> tuple[int | None, str]:
    """(row number, why). ``baseline``: a row name, a variant label, ``knob=value``, or a row
    number; default: study.json's baseline, else the row whose knobs are all off (0, none,
    false, off), else the first row."""
    frame = rows.frame
    if frame.empty:
        return None, "no rows"
    explicit = baseline is not None
    wanted = baseline if explicit else data.meta.get("baseline")
    if wanted is not None and str(wanted) != "":
        found = _match_row(rows, wanted)
        if found is not None:
            return found, f"{'requested' if explicit else 'study baseline'} '{wanted}'"
        if explicit:
            raise ValueError(f"baseline '{wanted}' matches no row; rows: {list(frame['row'])}")
        note = f"study baseline '{wanted}' matches no row; "
    else:
        note = ""
    knob_cols = [f"param.{k}" for k in rows.shown_knobs]
    off = []
    for i, rec in enumerate(frame.to_dict("records")):
        label_off = rows.has_variants and str(rec["label"]).strip().lower() in OFF_LABELS
        knobs_off = bool(knob_cols) and all(_off(rec[c]) for c in knob_cols)
        if label_off or (knobs_off and not rows.has_variants):
            off.append(i)
    if len(off) == 1:
        return off[0], note + "the row with every knob off"
    return 0, note + "the first row"


def _match_row(rows: Rows, wanted: str | int) -> int | None:
    frame = rows.frame
    if isinstance(wanted, int | np.integer) and not isinstance(wanted, bool):
        return int(wanted) if 0 <= wanted < len(frame) else None
    wanted = str(wanted)
    for col in ("row", "label"):
        hits = np.flatnonzero(frame[col].astype(str).to_numpy() == wanted)
        if len(hits):
            return int(hits[0])
    if "=" in wanted:
        knob, _, value = wanted.partition("=")
        knob = knob.strip()
        target = display_value(parse_value(value))
        for path, title in rows.knob_titles.items():
            if knob in (path, title) or path.endswith("." + knob):
                col = f"param.{path}"
                hits = np.flatnonzero(frame[col].to_numpy() == target)
                if len(hits):
                    # several rows share it (other knobs vary): prefer the one with the rest off
                    others = [f"param.{k}" for k in rows.shown_knobs if k != path]
                    for h in hits:
                        if all(_off(frame.at[h, c]) for c in others):
                            return int(h)
                    return int(hits[0])
        # a knob that is constant (not shown) still identifies a row if it matches
        for col in frame.columns:
            if col.startswith("param.") and (col[6:] == knob or col.endswith("." + knob)):
                hits = np.flatnonzero(frame[col].to_numpy() == target)
                if len(hits):
                    return int(hits[0])
    return None
