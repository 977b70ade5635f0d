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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from resweep.analysis.agreement import agreement_note, paper_agreement
from resweep.analysis.findings import finding_notes
from resweep.analysis.formatting import better, fmt_number
from resweep.analysis.load import StudyData, display_column, load_study
from resweep.analysis.reference import ReferenceCell, reference_cells, reference_name
from resweep.analysis.robust import ROBUST_FIELDS, robust_columns
from resweep.analysis.rows import Column, Rows, assign_rows, choose_baseline, resolve_columns
from resweep.analysis.stats import DEFAULT_CI, DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_many
from resweep.engine.records import NOTES_KEY

COUNT_COLUMNS = ("trials", "finished", "running", "diverged", "pruned", "errored")
PAIR_KEYS = ["seed", "image"]  # order of the pairs handed to the bootstrap (documented)
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
    reference: bool = True,
    robust: bool = False,
) -> pd.DataFrame:
    """The ablation table of a study as a DataFrame (one line per row).

    ``metric``: ``psnr_y``, ``["psnr", "ssim"]``, ``eval.Set5.psnr_y`` or any reported
    ``final.<metric>`` (default: PSNR/SSIM, Y channel for SR tasks); ``sets``: evaluation sets
    (default all); ``baseline``: row name, variant label, ``knob=value`` or row number.

    Columns: ``row`` (display name), ``label``, ``param.<knob>`` (display values), the counts
    ``trials finished running diverged pruned errored``, ``baseline`` and ``reference`` (bool;
    with ``reference=True`` the last line is the no-learning reference, bicubic / noisy input,
    when the study recorded its scores: see :mod:`resweep.analysis.reference`), and per metric
    column ``<key>:mean :std :n :delta :ci_low :ci_high :pairs :sig :cell`` where ``<key>``
    is ``eval.<set>.<metric>`` (``:cell`` is the rendered text), plus ``paper`` when study.json
    has a paper reference. ``robust=True`` adds ``<key>:iqm :iqm_low :iqm_high :poi :poi_low
    :poi_high`` (interquartile mean and probability of improvement over the baseline row, see
    :mod:`resweep.analysis.robust`). ``DataFrame.attrs`` holds the settings and notes, and with
    paper values ``agreement`` (see :mod:`resweep.analysis.agreement`).
    """
    return compute_ablation(
        _resolve_study(study), metric, sets, baseline,
        statuses=statuses, ddof=ddof, n_boot=n_boot, ci=ci, seed=seed, reference=reference, robust=robust,
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
    reference: bool = True,
    robust: bool = False,
) -> AblationResult:
    rows = assign_rows(data)
    columns = resolve_columns(data, metric, sets)
    base_row, base_reason = choose_baseline(rows, data, baseline)
    trials = data.trials.assign(_row=rows.trial_row)
    table = rows.frame.copy()
    n_rows = len(table)

    # ---- counts per row (vectorised crosstab); pending counts as running
    status = trials["status"].replace({"pending": "running"})
    if len(trials):  # = pd.crosstab(row, status), which aggregates group by group in Python (10^4 rows)
        counts = (pd.DataFrame({"row": trials["_row"].to_numpy(), "status": status.to_numpy()})
                  .groupby(["row", "status"]).size().unstack(fill_value=0))
    else:
        counts = pd.crosstab(trials["_row"], status)
    counts = counts.reindex(range(n_rows), fill_value=0)
    table["trials"] = counts.sum(axis=1).to_numpy() if len(counts.columns) else 0
    for s in COUNT_COLUMNS[1:]:
        table[s] = counts[s].to_numpy() if s in counts.columns else 0
    table["baseline"] = table.index == base_row
    table["reference"] = False

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
    if robust:  # opt-in: bootstraps per row over seeds x images (rliable's aggregates)
        stats.update(robust_columns(final_values(data, rows, columns, statuses), n_rows, base_row, columns,
                                    n_boot=n_boot, ci=ci, seed=seed))
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
        names = [f"{c.key}:mean", f"{c.key}:std", f"{c.key}:n", *COUNT_COLUMNS]
        # the records of to_dict("records") (Python scalars), built from the columns at once
        values = zip(*(table[name].tolist() for name in names), strict=True)
        table[f"{c.key}:cell"] = [_cell_text(dict(zip(names, v, strict=True)), c) for v in values]

    # ---- the paper's numbers
    paper = data.meta.get("paper") or None
    if paper:
        values = paper.get("values") or {}
        table["paper"] = [_paper_value(rec, rows, values) for rec in table.to_dict("records")]

    # ---- the no-learning reference (bicubic / noisy input) as its own, last, line
    ref_cells = (reference_cells(data, rows, base_row, columns, statuses, ddof=ddof, n_boot=n_boot,
                                 ci=ci, seed=seed) if reference else {})
    if ref_cells:
        table = pd.concat([table, _reference_line(table, data, columns, ref_cells, base_row)],
                          ignore_index=True)

    # column order: row info, counts, then each metric column's statistics together
    fields = ("mean", "std", "n", "delta", "ci_low", "ci_high", "pairs", "sig", "cell")
    per_col = [f"{c.key}:{k}" for c in columns for k in fields + (ROBUST_FIELDS if robust else ())]
    table = table[[c for c in table.columns if c not in per_col] + per_col]
    if paper:
        table = table[[c for c in table.columns if c != "paper"] + ["paper"]]

    total = int(table["trials"].sum())
    notes = list(data.notes)
    if NOTES_KEY in trials.columns:  # the methods' caveats (stand-ins, random features), per row
        for r, group in trials.dropna(subset=[NOTES_KEY]).groupby("_row", sort=True):
            for note in dict.fromkeys(str(n) for n in group[NOTES_KEY] if str(n)):
                notes.append(f"{table.at[r, 'row']}: {note}")
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
    notes += finding_notes(table, columns, base_row, ci)
    agreement = paper_agreement(table, columns, base_row, paper)
    if agreement is not None:
        notes.append(agreement_note(agreement))
    table.attrs.update(
        study=data.name, baseline_row=base_row,
        baseline_name=None if base_row is None else str(table.at[base_row, "row"]),
        baseline_reason=base_reason, columns=[(c.set, c.metric) for c in columns],
        knob_titles=dict(rows.knob_titles), shown_knobs=list(rows.shown_knobs),
        has_variants=rows.has_variants, ddof=ddof, n_boot=n_boot, ci=ci, seed=seed,
        statuses=list(statuses), notes=notes, paper=paper, agreement=agreement, robust=robust,
    )
    return AblationResult(table=table, rows=rows, columns=columns, baseline_row=base_row, diffs=diffs)


def _reference_line(
    table: pd.DataFrame, data: StudyData, columns: Sequence[Column], cells: dict[str, ReferenceCell],
    base_row: int | None,
) -> pd.DataFrame:
    """The reference as one line in the table's columns (no trials of its own: counts 0)."""
    name = reference_name(data)
    rec: dict[str, Any] = {}
    for col in table.columns:
        if col in COUNT_COLUMNS:
            rec[col] = 0
        elif col in ("baseline", "reference") or col.endswith(":sig"):
            rec[col] = col == "reference"
        elif col.endswith(":pairs") or col.endswith(":n"):
            rec[col] = 0
        elif col.endswith(":cell"):
            rec[col] = "—"
        elif col.rsplit(":", 1)[-1] in ("mean", "std", "delta", "ci_low", "ci_high", *ROBUST_FIELDS):
            rec[col] = np.nan
        else:
            rec[col] = ""  # row, label, param.<knob>, paper
    rec["row"] = rec["label"] = name
    if "paper" in rec:
        rec["paper"] = None
    for c in columns:
        cell = cells.get(c.key)
        if cell is None:
            continue
        for field in ("mean", "std", "n", "delta", "ci_low", "ci_high", "pairs", "sig"):
            rec[f"{c.key}:{field}"] = getattr(cell, field)
        if cell.pairs == 0 and base_row is not None:  # unpaired: Δ of the cell means, unmarked
            rec[f"{c.key}:delta"] = cell.mean - table.at[base_row, f"{c.key}:mean"]
        # deterministic (same degraded input for every seed): no ± 0.00
        spread = np.isfinite(cell.std) and round(cell.std, 6) != 0
        rec[f"{c.key}:cell"] = (f"{fmt_number(cell.mean, c.metric)} ± {fmt_number(cell.std, c.metric)}"
                                if spread else fmt_number(cell.mean, c.metric))
    return pd.DataFrame([rec], columns=table.columns).astype(table.dtypes.to_dict(), errors="ignore")


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
    if base_row is None:
        return empty
    long = final_values(data, rows, columns, statuses)
    if long.empty:
        return empty
    base = long[long["row"] == base_row].drop(columns="row").rename(columns={"value": "base"})
    others = long[long["row"] != base_row]
    paired = others.merge(base, on=["seed", "set", "image", "metric"], how="inner")
    paired["delta"] = paired["value"] - paired["base"]
    paired = paired[np.isfinite(paired["delta"].to_numpy(dtype=float))]
    return paired[["row", "set", "metric", "seed", "image", "value", "base", "delta"]].reset_index(drop=True)


def final_values(
    data: StudyData,
    rows: Rows,
    columns: Sequence[Column],
    statuses: Sequence[str] = ("finished",),
) -> pd.DataFrame:
    """Long frame of the final per-image values of the used trials: one line per
    (row, seed, set, image, metric) with ``value``; several trials of one seed in a row are
    averaged first. Empty when the study has no per-image values for ``columns``."""
    empty = pd.DataFrame(columns=["row", "seed", "set", "image", "metric", "value"])
    fpi = data.final_per_image()
    wanted = {(c.set, c.metric) for c in columns if c.set is not None}
    if fpi.empty or not wanted:
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
    key = long["set"].astype(str) + "\x00" + long["metric"].astype(str)  # vectorised: 10^6 pairs
    return long[key.isin({f"{s}\x00{m}" for s, m in wanted})]


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
    d = t[f"{column.key}:delta"].where(~t["baseline"] & ~t["reference"])
    if not d.notna().any():
        return None
    return int(d.idxmax() if better(column.metric) == "max" else d.idxmin())
