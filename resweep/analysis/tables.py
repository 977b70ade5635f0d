"""Ablation tables: one row per knob combination (or variant), evaluation sets x metrics.

Semantics (also printed under every rendered table):

- cell = mean ± std (``ddof=1`` by default) over seeds of a trial's ``final.<metric>``, using
  the trials whose status is in ``statuses`` (``finished``); several trials of one seed in one
  row are averaged first, so n counts seeds;
- Δ = mean over matched (seed, image) pairs of (row − baseline row) of the final per-image
  metric (a trial's rows at its last evaluated iteration); when a row shares no such pair
  with the baseline row (metrics without per-image values such as ``time_per_step``, no
  per_image.parquet, no common seed), the difference of the two cell means, unmarked;
- ``*`` = the percentile bootstrap CI of that mean Δ (pairs resampled, fixed RNG seed, see
  :mod:`resweep.analysis.stats`) excludes 0;
- a row whose seeds all diverged reads ``collapse``; counts of finished / running / diverged /
  pruned / errored trials are columns, so a partial study gives a partial table, not gaps.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.load import (
    OFF_LABELS,
    OFF_VALUES,
    StudyData,
    display_column,
    display_value,
    load_study,
    parse_value,
    sort_key,
)
from resweep.analysis.stats import DEFAULT_CI, DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_many
from resweep.metrics.directions import metric_direction

COUNT_COLUMNS = ("trials", "finished", "running", "diverged", "pruned", "errored")
PAIR_KEYS = ["seed", "image"]  # order of the pairs handed to the bootstrap (documented)


# --------------------------------------------------------------------------- escaping
_LATEX_MAP = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "–": "--", "−": r"$-$", "×": r"$\times$",
    "†": r"\dag{}", "…": r"\ldots{}", "·": r"$\cdot$",
    "\n": " ",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_MAP))
# inside a table cell (never at line start) only inline-emphasis/code/link/pipe characters matter
_MD_RE = re.compile(r"([\\`*_\[\]|~])")


def latex_escape(text: Any) -> str:
    """Escape every LaTeX special character (and map ±, Δ, — to their LaTeX forms)."""
    return _LATEX_RE.sub(lambda m: _LATEX_MAP[m.group(0)], str(text))


def html_escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def md_escape(text: Any) -> str:
    """Markdown table cell: HTML-escaped (Markdown renders raw HTML) and Markdown-escaped."""
    return _MD_RE.sub(r"\\\1", html.escape(str(text), quote=False)).replace("\n", " ")


# --------------------------------------------------------------------------- metric names
def metric_title(metric: str) -> str:
    """psnr_y -> PSNR-Y, ssim -> SSIM, time_per_step -> time_per_step."""
    base, _, suffix = metric.partition("_")
    if base in ("psnr", "ssim"):
        return base.upper() + (f"-{suffix.upper()}" if suffix == "y" else f" {suffix}" if suffix else "")
    return metric


def metric_decimals(metric: str) -> int | None:
    name = metric.rsplit(".", 1)[-1]
    if name.startswith("psnr"):
        return 2
    if name.startswith("ssim"):
        return 4
    return None  # general numbers: 4 significant digits


def fmt_number(value: float, metric: str, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    dec = metric_decimals(metric)
    sign = "+" if signed else ""
    if dec is not None and round(value, dec) == 0:
        value = 0.0  # no "-0.0000"
    return f"{value:{sign}.{dec}f}" if dec is not None else f"{value:{sign}.4g}"


def better(metric: str, mode: str | None = None) -> str:
    """Direction in which a metric improves: the objective's mode, else the table's."""
    return metric_direction(metric, mode)


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
    """PSNR/SSIM on the Y channel for SR tasks, RGB for denoising."""
    return ["psnr_y", "ssim_y"] if data.is_sr else ["psnr", "ssim"]


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


# --------------------------------------------------------------------------- computation
@dataclass
class AblationResult:
    table: pd.DataFrame
    rows: Rows
    columns: list[Column]
    baseline_row: int | None
    diffs: pd.DataFrame  # long: row, set, metric, seed, image, delta, value, base


def _resolve_study(study: str | Path | StudyData) -> StudyData:
    return study if isinstance(study, StudyData) else load_study(study)


def ablation_table(
    study: str | Path | StudyData,
    metric: str | Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    baseline: str | int | None = None,
    *,
    statuses: Sequence[str] = ("finished",),
    ddof: int = 1,
    n_boot: int = DEFAULT_N_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """The ablation table of a study as a DataFrame (one line per row).

    ``metric``: ``psnr_y``, ``["psnr", "ssim"]``, ``eval.Set5.psnr_y`` or any reported
    ``final.<metric>`` (default: PSNR/SSIM, Y channel for SR tasks); ``sets``: evaluation sets
    (default all); ``baseline``: row name, variant label, ``knob=value`` or row number.

    Columns: ``row`` (display name), ``label``, ``param.<knob>`` (display values), the counts
    ``trials finished running diverged pruned errored``, ``baseline`` (bool), and per metric
    column ``<key>:mean :std :n :delta :ci_low :ci_high :pairs :sig :cell`` where ``<key>``
    is ``eval.<set>.<metric>`` (``:cell`` is the rendered text), plus ``paper`` when study.json
    has a paper reference. ``DataFrame.attrs`` holds the settings and notes.
    """
    return compute_ablation(
        _resolve_study(study), metric, sets, baseline,
        statuses=statuses, ddof=ddof, n_boot=n_boot, ci=ci, seed=seed,
    ).table


def compute_ablation(
    data: StudyData,
    metric: str | Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    baseline: str | int | None = None,
    *,
    statuses: Sequence[str] = ("finished",),
    ddof: int = 1,
    n_boot: int = DEFAULT_N_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = DEFAULT_SEED,
) -> AblationResult:
    rows = assign_rows(data)
    columns = resolve_columns(data, metric, sets)
    base_row, base_reason = choose_baseline(rows, data, baseline)
    trials = data.trials.assign(_row=rows.trial_row)
    table = rows.frame.copy()
    n_rows = len(table)

    # ---- counts per row (vectorised crosstab); pending counts as running
    status = trials["status"].replace({"pending": "running"})
    counts = pd.crosstab(trials["_row"], status).reindex(range(n_rows), fill_value=0)
    table["trials"] = counts.sum(axis=1).to_numpy() if len(counts.columns) else 0
    for s in COUNT_COLUMNS[1:]:
        table[s] = counts[s].to_numpy() if s in counts.columns else 0
    table["baseline"] = table.index == base_row

    # ---- mean / std over seeds of the final metric
    used = trials[trials["status"].isin(list(statuses))]
    finals = [c.final for c in columns]
    if finals:
        vals = used[["_row", "seed", *finals]].copy()
        vals[finals] = vals[finals].apply(pd.to_numeric, errors="coerce")
        per_seed = vals.groupby(["_row", "seed"], sort=False)[finals].mean()
        grouped = per_seed.groupby(level="_row")
        means = grouped.mean().reindex(range(n_rows))
        stds = grouped.std(ddof=ddof).reindex(range(n_rows))
        ns = grouped.count().reindex(range(n_rows)).fillna(0).astype(int)
    for c in columns:
        table[f"{c.key}:mean"] = means[c.final].to_numpy()
        table[f"{c.key}:std"] = stds[c.final].to_numpy()
        table[f"{c.key}:n"] = ns[c.final].to_numpy()

    # ---- paired differences per image and their bootstrap CIs
    diffs = paired_differences(data, rows, base_row, columns, statuses)
    stats = {f"{c.key}:{k}": np.full(n_rows, np.nan) for c in columns for k in ("delta", "ci_low", "ci_high")}
    stats.update({f"{c.key}:pairs": np.zeros(n_rows, dtype=np.int64) for c in columns})
    stats.update({f"{c.key}:sig": np.zeros(n_rows, dtype=bool) for c in columns})
    if not diffs.empty:
        diffs = diffs.sort_values(["row", "set", "metric", *PAIR_KEYS], kind="stable").reset_index(drop=True)
        codes = diffs.groupby(["row", "set", "metric"], sort=False).ngroup().to_numpy()
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        bounds = np.r_[starts, len(diffs)]
        delta = diffs["delta"].to_numpy(dtype=np.float64)
        groups = [delta[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        cis = bootstrap_many(groups, n_boot=n_boot, ci=ci, seed=seed)
        heads = diffs.iloc[starts]
        for r, s, m, res in zip(heads["row"], heads["set"], heads["metric"], cis, strict=True):
            key = f"eval.{s}.{m}"
            if f"{key}:pairs" not in stats:
                continue
            stats[f"{key}:delta"][r] = res.mean
            stats[f"{key}:ci_low"][r] = res.low
            stats[f"{key}:ci_high"][r] = res.high
            stats[f"{key}:pairs"][r] = res.n
            stats[f"{key}:sig"][r] = res.excludes_zero
    table = pd.concat([table, pd.DataFrame(stats, index=table.index)], axis=1)
    if base_row is not None:
        for c in columns:
            # no (seed, image) pair with the baseline: Δ of the cell means, no interval
            no_pairs = table[f"{c.key}:pairs"] == 0
            d = table[f"{c.key}:mean"] - table.at[base_row, f"{c.key}:mean"]
            table.loc[no_pairs, f"{c.key}:delta"] = d[no_pairs]
            table.at[base_row, f"{c.key}:delta"] = 0.0
            table.at[base_row, f"{c.key}:sig"] = False

    # ---- rendered cell text
    for c in columns:
        table[f"{c.key}:cell"] = [
            _cell_text(rec, c) for rec in table[[f"{c.key}:mean", f"{c.key}:std", f"{c.key}:n",
                                                *COUNT_COLUMNS]].to_dict("records")
        ]

    # ---- the paper's numbers
    paper = data.meta.get("paper") or None
    if paper:
        values = paper.get("values") or {}
        table["paper"] = [_paper_value(rec, rows, values) for rec in table.to_dict("records")]

    # column order: row info, counts, then each metric column's statistics together
    per_col = [f"{c.key}:{k}" for c in columns
               for k in ("mean", "std", "n", "delta", "ci_low", "ci_high", "pairs", "sig", "cell")]
    table = table[[c for c in table.columns if c not in per_col] + per_col]
    if paper:
        table = table[[c for c in table.columns if c != "paper"] + ["paper"]]

    total = int(table["trials"].sum())
    notes = list(data.notes)
    done = int(table["finished"].sum())
    planned = data.meta.get("total_trials")
    not_started = max(0, int(planned) - total) if isinstance(planned, int) else 0
    unfinished = {s: int(table[s].sum()) for s in COUNT_COLUMNS[2:] if int(table[s].sum())}
    summary = ", ".join(f"{n} {s}" for s, n in unfinished.items())
    if unfinished.get("running") or not_started:
        extra = f", {not_started} not started" if not_started else ""
        notes.append(f"partial study: {done} of {total + not_started} trials finished ({summary or 'none other'}{extra})")
    elif done < total:
        notes.append(f"{done} of {total} trials finished ({summary})")
    if base_row is not None and table.at[base_row, "finished"] == 0:
        notes.append("the baseline row has no finished trial yet: no Δ")
    table.attrs.update(
        study=data.name, baseline_row=base_row,
        baseline_name=None if base_row is None else str(table.at[base_row, "row"]),
        baseline_reason=base_reason, columns=[(c.set, c.metric) for c in columns],
        knob_titles=dict(rows.knob_titles), shown_knobs=list(rows.shown_knobs),
        has_variants=rows.has_variants, ddof=ddof, n_boot=n_boot, ci=ci, seed=seed,
        statuses=list(statuses), notes=notes, paper=paper,
    )
    return AblationResult(table=table, rows=rows, columns=columns, baseline_row=base_row, diffs=diffs)


def paired_differences(
    data: StudyData,
    rows: Rows,
    base_row: int | None,
    columns: Sequence[Column],
    statuses: Sequence[str] = ("finished",),
) -> pd.DataFrame:
    """Long frame of per-image differences (row − baseline row) at the final evaluation.

    One line per (row, set, metric, seed, image) that both rows have: ``value``, ``base``,
    ``delta``. Several trials of one seed in a row are averaged first.
    """
    empty = pd.DataFrame(columns=["row", "set", "metric", "seed", "image", "value", "base", "delta"])
    fpi = data.final_per_image()
    wanted = {(c.set, c.metric) for c in columns if c.set is not None}
    if base_row is None or fpi.empty or not wanted:
        return empty
    metrics = sorted({m for _, m in wanted if m in fpi.columns})
    if not metrics:
        return empty
    trials = data.trials
    ok = trials["status"].isin(list(statuses))
    ids = pd.DataFrame({"trial_id": trials.loc[ok, "trial_id"], "row": rows.trial_row[ok],
                        "seed": trials.loc[ok, "seed"]})
    pi = fpi[["trial_id", "set", "image", *metrics]].merge(ids, on="trial_id", how="inner")
    pi = pi[pi["set"].isin({s for s, _ in wanted})]
    if pi.empty:
        return empty
    pi[metrics] = pi[metrics].apply(pd.to_numeric, errors="coerce")
    agg = pi.groupby(["row", "seed", "set", "image"], sort=False)[metrics].mean().reset_index()
    long = agg.melt(id_vars=["row", "seed", "set", "image"], value_vars=metrics,
                    var_name="metric", value_name="value")
    long = long[[(s, m) in wanted for s, m in zip(long["set"], long["metric"], strict=True)]]
    base = long[long["row"] == base_row].drop(columns="row").rename(columns={"value": "base"})
    others = long[long["row"] != base_row]
    paired = others.merge(base, on=["seed", "set", "image", "metric"], how="inner")
    paired["delta"] = paired["value"] - paired["base"]
    paired = paired[np.isfinite(paired["delta"].to_numpy(dtype=float))]
    return paired[["row", "set", "metric", "seed", "image", "value", "base", "delta"]].reset_index(drop=True)


def _cell_text(rec: dict[str, Any], c: Column) -> str:
    n = int(rec[f"{c.key}:n"])
    mean, std = rec[f"{c.key}:mean"], rec[f"{c.key}:std"]
    if n > 0 and np.isfinite(mean):
        if n > 1 and np.isfinite(std):
            return f"{fmt_number(mean, c.metric)} ± {fmt_number(std, c.metric)}"
        return fmt_number(mean, c.metric)
    total = int(rec["trials"])
    if total == 0:
        return "not started"
    if rec["diverged"] == total:
        return "collapse"
    parts = [f"{int(rec[s])} {s}" for s in ("running", "diverged", "pruned", "errored") if rec[s]]
    if rec["finished"] and not parts:
        return "no value"  # finished trials that never reported this metric
    return "— (" + ", ".join(parts) + ")" if parts else "—"


def _paper_value(rec: dict[str, Any], rows: Rows, values: dict[str, Any]) -> Any:
    candidates = [rec["row"], rec.get("label", "")]
    candidates += [rec[f"param.{k}"] for k in rows.shown_knobs]
    candidates += [f"{rows.knob_titles[k]}={rec[f'param.{k}']}" for k in rows.shown_knobs]
    for cand in candidates:
        if cand != "" and cand in values:
            return values[cand]
    return None


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


def _layout(table: pd.DataFrame) -> _Layout:
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
    paper_after: int | None = None
    if paper and columns:
        pm = str(paper.get("metric") or "psnr")
        setting = str(paper.get("setting") or "")
        matches = [i for i, c in enumerate(columns) if c.metric in (pm, f"{pm}_y") or pm == c.key]
        in_setting = [i for i in matches if columns[i].set and columns[i].set in setting]
        paper_after = (in_setting or matches or [len(columns) - 1])[0]

    # per column: (group title, header); group "" = a single column spanning both header rows
    cols: list[tuple[str, str]] = [("", h) for h, _ in info] + [("", h) for h, _ in counts]
    paper_title = f"paper {paper.get('table', '')}".strip() if paper else ""
    for i, c in enumerate(columns):
        group = c.set if c.set is not None else c.title
        cols += [(group, c.title), (group, "Δ")]
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
    for rec in table.to_dict("records"):
        cells = [_Cell(str(get(rec))) for _, get in info]
        cells += [_Cell(str(int(rec[col])), num=True) for _, col in counts]
        for i, c in enumerate(columns):
            text = rec[f"{c.key}:cell"]
            cls = "collapse" if text == "collapse" else ""
            cells.append(_Cell(text, cls=cls, num=True))
            cells.append(_delta_cell(rec, c, attrs))
            if paper_after == i:
                cells.append(_paper_cell(rec, c.metric))
        if paper and paper_after is None:
            cells.append(_paper_cell(rec, str(paper.get("metric") or "")))
        out_rows.append(cells)
        classes.append("baseline" if rec["baseline"] else "")

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
    if paper:
        notes.append(
            f"paper: {paper.get('table', '')} {paper.get('setting', '')}, metric {paper.get('metric', '')}"
            " (as published)."
        )
    notes += attrs.get("notes", [])
    caption = f"Ablation: {attrs.get('study', '')}"
    return _Layout(groups, headers, out_rows, classes, caption, notes)


def _delta_cell(rec: dict[str, Any], c: Column, attrs: dict[str, Any]) -> _Cell:
    if rec["baseline"]:
        return _Cell("baseline", cls="ref", num=True)
    d = rec[f"{c.key}:delta"]
    if not np.isfinite(d):
        return _Cell("—", num=True)
    sig = bool(rec[f"{c.key}:sig"])
    good = d > 0 if better(c.metric) == "max" else d < 0
    cls = ("better" if good else "worse") if sig else ""
    return _Cell(fmt_number(d, c.metric, signed=True) + ("*" if sig else ""), cls=cls, num=True)


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
        lines.append("| " + " | ".join(texts) + " |")
    lines.append("")
    lines += [md_escape(n) + "  " for n in lay.notes]
    return "\n".join(lines) + "\n"


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
    return '<ul class="table-notes">' + "".join(f"<li>{html_escape(n)}</li>" for n in _layout(table).notes) + "</ul>"


def frame_to_html(df: pd.DataFrame, table_id: str, max_rows: int | None = None, classes: str = "plain") -> str:
    """Any small frame as an escaped HTML table (numbers with 4 significant digits)."""
    shown = df if max_rows is None else df.head(max_rows)
    head = "".join(f"<th>{html_escape(c)}</th>" for c in shown.columns)
    body = []
    for rec in shown.itertuples(index=False):
        tds = []
        for v in rec:
            if isinstance(v, float | np.floating):
                text, cls = ("—" if not np.isfinite(v) else f"{v:.4g}"), ' class="num"'
            elif isinstance(v, int | np.integer) and not isinstance(v, bool):
                text, cls = str(v), ' class="num"'
            else:
                text, cls = ("" if v is None else str(v)), ""
            tds.append(f"<td{cls}>{html_escape(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    more = ""
    if max_rows is not None and len(df) > max_rows:
        more = f'<p class="note">{len(df) - max_rows} more rows in the CSV file.</p>'
    return (f'<table class="{html_escape(classes)}" id="{html_escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>{more}\n")


def trials_table(data: StudyData, rows: Rows | None = None) -> pd.DataFrame:
    """One line per trial: id, row, seed, status, progress, objectives, error."""
    rows = rows or assign_rows(data)
    t = data.trials
    out = pd.DataFrame({"trial_id": t["trial_id"], "row": rows.frame["row"].to_numpy()[rows.trial_row.to_numpy()]
                        if len(t) else pd.Series(dtype=str)})
    if rows.has_variants:
        out["label"] = t["label"]
    for k in data.knobs:
        if f"param.{k}" in t.columns:
            out[f"param.{k}"] = display_column(t[f"param.{k}"])
    out["seed"] = t["seed"]
    out["status"] = t["status"]
    out["iterations"] = t["iterations"]
    out["time_total_s"] = pd.to_numeric(t["time_total_s"], errors="coerce")
    for o in data.objectives:
        col = f"final.{o['metric']}"
        if col in t.columns:
            out[col] = pd.to_numeric(t[col], errors="coerce")
    out["error"] = t["error"].fillna("").astype(str)
    return out


def image_ranking(data: StudyData, result: AblationResult, column: Column, row: int, k: int = 5) -> pd.DataFrame:
    """The ``k`` images where ``row`` gains most and the ``k`` where it loses most against the
    baseline row (Δ averaged over the seeds both rows finished), with the input baseline's
    score (bicubic / noisy input) for scale."""
    d = result.diffs
    d = d[(d["row"] == row) & (d["metric"] == column.metric)]
    if d.empty:
        return pd.DataFrame(columns=["kind", "set", "image", "delta", "seeds", "row_value", "baseline_value"])
    agg = (d.groupby(["set", "image"], sort=False)
           .agg(delta=("delta", "mean"), seeds=("seed", "nunique"), row_value=("value", "mean"),
                baseline_value=("base", "mean"))
           .reset_index())
    input_col = f"{column.metric}_baseline"
    fpi = data.final_per_image()
    if input_col in fpi.columns:
        inputs = (fpi.groupby(["set", "image"], sort=False)[input_col].mean()
                  .rename("input_baseline_value").reset_index())
        agg = agg.merge(inputs, on=["set", "image"], how="left")
    sign = 1.0 if better(column.metric) == "max" else -1.0
    agg = agg.assign(_score=sign * agg["delta"]).sort_values(["_score", "set", "image"], ascending=[False, True, True])
    gains = agg[agg["_score"] > 0].head(k).assign(kind="gain")
    losses = agg[agg["_score"] < 0].iloc[::-1].head(k).assign(kind="loss")
    out = pd.concat([gains, losses], ignore_index=True).drop(columns="_score")
    return out[["kind", *[c for c in out.columns if c != "kind"]]]


def best_row(result: AblationResult, column: Column) -> int | None:
    """The non-baseline row with the best mean Δ on ``column`` (None if no row has one)."""
    t = result.table
    d = t[f"{column.key}:delta"].where(~t["baseline"])
    if not d.notna().any():
        return None
    return int(d.idxmax() if better(column.metric) == "max" else d.idxmin())
