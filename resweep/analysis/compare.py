"""Several studies side by side: ``resweep compare DIR1 DIR2 … --out DIR``.

Each study's ablation table is computed as :func:`resweep.analysis.ablation_table` does (its own
baseline row, its own Δ); then the rows are matched across studies:

- first by configuration: the variant label and every knob value of the row (knobs that are
  constant in a study included), as shown in the study's table;
- a row left unmatched then by its row name (``alpha=0.5``, a variant label);
- anything else is a line of its own, blank for the studies that lack it.

The first study is the reference: per line and column, Δ(study k − study 1) = mean over the
(seed, set, image) triples both have of the difference of the final per-image values (several
trials of one seed averaged first), with the same percentile bootstrap CI as the ablation
tables (:func:`resweep.analysis.stats.bootstrap_many`, pairs ordered by (seed, image)); ``*``
when it excludes 0. Without such pairs (no common seed, no per-image values): the difference
of the two cell means, unmarked. Seeds pair by number: the same seed and image in two studies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from resweep.analysis.ablation import AblationResult, compute_ablation, final_values
from resweep.analysis.formatting import better, fmt_number
from resweep.analysis.load import StudyData, load_study
from resweep.analysis.rows import Column
from resweep.analysis.stats import DEFAULT_CI, DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_many


@dataclass
class Comparison:
    """``table``: one line per matched row: ``row``, ``s<i>:row`` (the row's name in study i,
    "" when absent), per column key and study ``<key>@<i>:mean :std :n :delta :sig :cell`` and per
    later study ``<key>@<i>-0:diff :low :high :pairs :sig``. ``best``: one line per study."""

    studies: list[str]
    dirs: list[Path]
    columns: list[Column]
    table: pd.DataFrame
    best: pd.DataFrame
    results: list[AblationResult] = field(repr=False, default_factory=list)
    notes: list[str] = field(default_factory=list)


def _labels(datas: Sequence[StudyData]) -> list[str]:
    names = [str(d.name) for d in datas]
    if len(set(names)) < len(names):  # the same study file run twice: the folders tell them apart
        names = [d.dir.name for d in datas]
    if len(set(names)) < len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return names


def _config_keys(result: AblationResult) -> list[str]:
    frame = result.rows.frame
    knobs = sorted(c for c in frame.columns if c.startswith("param."))
    return ["\x00".join([str(rec["label"]), *(f"{k}={rec[k]}" for k in knobs)]) for rec in frame.to_dict("records")]


def _match(results: Sequence[AblationResult]) -> tuple[list[str], np.ndarray]:
    """(line names, lines x studies matrix of row numbers, -1 = absent)."""
    names: list[str] = []
    by_config: dict[str, int] = {}
    by_name: dict[str, int] = {}
    cells: list[list[int]] = []
    for i, res in enumerate(results):
        rows = res.rows.frame["row"].astype(str).tolist()
        for r, (name, key) in enumerate(zip(rows, _config_keys(res), strict=True)):
            line = by_config.get(key)
            if line is None or cells[line][i] >= 0:
                line = by_name.get(name)
                if line is not None and cells[line][i] >= 0:
                    line = None
            if line is None:
                line = len(names)
                names.append(name)
                cells.append([-1] * len(results))
            cells[line][i] = r
            by_config.setdefault(key, line)
            by_name.setdefault(name, line)
    return names, np.array(cells, dtype=np.int64).reshape(len(names), len(results))


def _common_columns(results: Sequence[AblationResult], explicit: bool, datas: Sequence[StudyData]) -> list[Column]:
    keys = [{c.key for c in r.columns} for r in results]
    common = [c for c in results[0].columns if all(c.key in k for k in keys)]
    if explicit or not common:
        return common
    for o in datas[0].objectives:  # default: the first study's first objective, when all have it
        hit = [c for c in common if c.key == o["metric"]]
        if hit:
            return hit
    return [next((c for c in common if c.set is not None), common[0])]


def compare_studies(
    studies: Sequence[str | Path | StudyData],
    metric: str | Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    *,
    statuses: Sequence[str] = ("finished",),
    n_boot: int = DEFAULT_N_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Match the rows of ``studies`` (2 or more) and compute Δ of each against the first.

    ``metric``/``sets`` as for :func:`resweep.analysis.ablation_table`; the columns compared
    are those every study has (default: the first study's first objective)."""
    if len(studies) < 2:
        raise ValueError("compare needs at least two studies")
    datas = [s if isinstance(s, StudyData) else load_study(s) for s in studies]
    results = [compute_ablation(d, metric, sets, statuses=statuses, n_boot=n_boot, ci=ci, seed=seed,
                                reference=False) for d in datas]
    labels = _labels(datas)
    columns = _common_columns(results, metric is not None, datas)
    names, cells = _match(results)
    table = pd.DataFrame({"row": names})
    for i, res in enumerate(results):
        rn = res.rows.frame["row"].astype(str).to_numpy()
        table[f"s{i}:row"] = [rn[r] if r >= 0 else "" for r in cells[:, i]]
        table[f"s{i}:baseline"] = [bool(r >= 0 and r == res.baseline_row) for r in cells[:, i]]
    for c in columns:
        for i, res in enumerate(results):
            present = cells[:, i] >= 0
            rows_i = np.where(present, cells[:, i], 0)
            for f in ("mean", "std", "n", "delta", "sig", "cell"):
                col = res.table[f"{c.key}:{f}"].to_numpy()[rows_i]
                blank = {"cell": "", "sig": False}.get(f, np.nan)
                table[f"{c.key}@{i}:{f}"] = np.where(present, col, blank)
        for i in range(1, len(results)):
            table = pd.concat([table, _cross_delta(datas, results, cells, c, i, statuses, n_boot, ci, seed,
                                                   table)], axis=1)
    notes = [
        f"Studies: {', '.join(f'{lab} ({d.dir})' for lab, d in zip(labels, datas, strict=True))}; "
        f"reference study: {labels[0]}.",
        "Rows matched by configuration (variant label and every knob value), else by row name; "
        "a blank cell: the study has no such row.",
        f"Cells: mean ± std over seeds (each study's own table); Δ base: vs that study's own baseline row (* as in its table). "
        f"Δ vs {labels[0]}: mean over (seed, image) pairs of the two studies' final per-image values, "
        f"* = the {int(round(100 * ci))}% paired bootstrap CI ({n_boot} resamples, seed {seed}) excludes 0; "
        "no pair (no common seed, or no per-image values): Δ of the cell means, unmarked.",
    ]
    if not columns:
        notes.append("the studies share no metric column: nothing to compare")
    return Comparison(labels, [d.dir for d in datas], columns, table, _best(results, labels, columns),
                      results, notes)


def _cross_delta(datas: Sequence[StudyData], results: Sequence[AblationResult], cells: np.ndarray, c: Column,
                 i: int, statuses: Sequence[str], n_boot: int, ci: float, seed: int,
                 table: pd.DataFrame) -> pd.DataFrame:
    n_lines = len(cells)
    out = {f: np.full(n_lines, np.nan) for f in ("diff", "low", "high")}
    pairs = np.zeros(n_lines, dtype=np.int64)
    sig = np.zeros(n_lines, dtype=bool)
    both = (cells[:, 0] >= 0) & (cells[:, i] >= 0)
    longs = []
    for j in (0, i):
        v = final_values(datas[j], results[j].rows, [c], statuses)
        if v.empty:
            longs.append(v)
            continue
        line_of_row = np.full(len(results[j].rows.frame), -1, dtype=np.int64)
        line_of_row[cells[both, j]] = np.flatnonzero(both)
        v = v.assign(line=line_of_row[v["row"].to_numpy(dtype=np.int64)])
        longs.append(v[v["line"] >= 0].drop(columns="row"))
    if not any(v.empty for v in longs):
        m = longs[1].merge(longs[0], on=["line", "seed", "set", "image", "metric"], suffixes=("", "_ref"))
        m["delta"] = pd.to_numeric(m["value"], errors="coerce") - pd.to_numeric(m["value_ref"], errors="coerce")
        m = m[np.isfinite(m["delta"].to_numpy(dtype=np.float64))]
        m = m.sort_values(["line", "seed", "image"], kind="stable")
        groups = [(int(line), g["delta"].to_numpy(dtype=np.float64)) for line, g in m.groupby("line", sort=True)]
        for (line, _), res in zip(groups, bootstrap_many([g for _, g in groups], n_boot=n_boot, ci=ci, seed=seed),
                                  strict=True):
            out["diff"][line], out["low"][line], out["high"][line] = res.mean, res.low, res.high
            pairs[line], sig[line] = res.n, res.excludes_zero
    unpaired = both & (pairs == 0)
    means = (table[f"{c.key}@{i}:mean"].astype(float) - table[f"{c.key}@0:mean"].astype(float)).to_numpy()
    out["diff"][unpaired] = means[unpaired]
    pre = f"{c.key}@{i}-0"
    return pd.DataFrame({f"{pre}:diff": out["diff"], f"{pre}:low": out["low"], f"{pre}:high": out["high"],
                         f"{pre}:pairs": pairs, f"{pre}:sig": sig})


def _best(results: Sequence[AblationResult], labels: Sequence[str], columns: Sequence[Column]) -> pd.DataFrame:
    """Per study, the row with the best mean on the first compared column (its configuration)."""
    recs = []
    if not columns:
        return pd.DataFrame(columns=["study", "row", "configuration", "column", "mean", "std", "n", "delta"])
    c = columns[0]
    for label, res in zip(labels, results, strict=True):
        t = res.table
        means = pd.to_numeric(t[f"{c.key}:mean"], errors="coerce")
        if not means.notna().any():
            recs.append({"study": label, "row": "", "configuration": "", "column": c.key, "mean": np.nan,
                         "std": np.nan, "n": 0, "delta": np.nan})
            continue
        r = int(means.idxmax() if better(c.metric) == "max" else means.idxmin())
        frame = res.rows.frame
        # knobs the row sets (a variant that leaves a knob at the base value has none there)
        conf = ", ".join(f"{k[6:]}={frame.at[r, k]}" for k in frame.columns
                         if k.startswith("param.") and not _unset(frame.at[r, k]))
        if frame.at[r, "label"]:
            conf = f"{frame.at[r, 'label']}: {conf}" if conf else str(frame.at[r, "label"])
        recs.append({"study": label, "row": str(t.at[r, "row"]), "configuration": conf, "column": c.key,
                     "mean": float(means[r]), "std": float(t.at[r, f"{c.key}:std"]), "n": int(t.at[r, f"{c.key}:n"]),
                     "delta": float(t.at[r, f"{c.key}:delta"])})
    return pd.DataFrame(recs)


def _unset(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return str(value).lower() in ("none", "nan", "")


def cross_cell(rec: dict, key: str, i: int, metric: str) -> str:
    """Text of Δ(study i − study 0): ``+0.12* [+0.03, +0.21]``; ``—`` when absent."""
    pre = f"{key}@{i}-0"
    d = rec[f"{pre}:diff"]
    if not np.isfinite(d):
        return "—"
    text = fmt_number(d, metric, signed=True) + ("*" if rec[f"{pre}:sig"] else "")
    if np.isfinite(rec[f"{pre}:low"]):
        text += f" [{fmt_number(rec[f'{pre}:low'], metric, signed=True)}, {fmt_number(rec[f'{pre}:high'], metric, signed=True)}]"
    return text
