"""The no-learning reference row of an ablation table: bicubic upsampling (SR), the noisy input
(denoising).

The trainer's evaluation scores this reference beside the model on every evaluation image with
the same code (``<metric>_baseline`` in per_image.parquet, ``final.eval.<set>.<metric>_baseline``
in trials.parquet; see docs/results-schema.md). So the row is read, not recomputed: from the
baseline row's trials, paired with them image by image. Its Δ (reference − baseline row) is the
scale every other Δ of the table is read against: a method that gains 0.05 dB means little
when training itself gains 0.1 dB over bicubic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from resweep.analysis.load import StudyData
from resweep.analysis.rows import Column, Rows
from resweep.analysis.stats import bootstrap_many

REFERENCE_SUFFIX = "_baseline"  # suffix of the reference's scores in the study's files


def reference_name(data: StudyData) -> str:
    """``bicubic`` when the task upsamples, else ``noisy input`` (what Task.baseline returns)."""
    task = data.meta.get("task") or {}
    scale = task.get("scale")
    upsamples = int(scale) > 1 if isinstance(scale, int | float) else data.is_sr
    return "bicubic (no learning)" if upsamples else "noisy input (no learning)"


@dataclass
class ReferenceCell:
    """One column of the reference row. ``delta`` = reference − baseline row, paired over
    (seed, image) when ``pairs`` > 0 (then ``ci_low``/``ci_high``/``sig`` are its bootstrap CI)."""

    mean: float
    std: float
    n: int
    delta: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    pairs: int = 0
    sig: bool = False


def reference_cells(
    data: StudyData,
    rows: Rows,
    base_row: int | None,
    columns: Sequence[Column],
    statuses: Sequence[str],
    *,
    ddof: int,
    n_boot: int,
    ci: float,
    seed: int,
) -> dict[str, ReferenceCell]:
    """Column key -> the reference's cell, for the columns whose reference scores were recorded.

    The scores come from the baseline row's trials (any used trial when the baseline row has
    none finished: then no pairs, and no Δ). Pairs are ordered by (seed, image) as the rows' are.
    """
    trials = data.trials
    used = trials["status"].isin(list(statuses)).to_numpy()
    in_base = used & (rows.trial_row.to_numpy() == base_row) if base_row is not None else used & False
    paired = bool(in_base.any())
    source = in_base if paired else used
    if not source.any():
        return {}
    ids = pd.DataFrame({"trial_id": trials["trial_id"][source], "seed": trials["seed"][source]})
    out: dict[str, ReferenceCell] = {}
    groups: list[np.ndarray] = []
    paired_keys: list[str] = []

    fpi = data.final_per_image()
    per_image = [c for c in columns if c.set is not None and not fpi.empty
                 and f"{c.metric}{REFERENCE_SUFFIX}" in fpi.columns and c.metric in fpi.columns]
    if per_image:
        pi = fpi.merge(ids, on="trial_id", how="inner")
        for c in per_image:
            sub = pi[pi["set"] == c.set]
            if sub.empty:
                continue
            frame = pd.DataFrame({
                "seed": sub["seed"].to_numpy(), "image": sub["image"].to_numpy(),
                "ref": pd.to_numeric(sub[f"{c.metric}{REFERENCE_SUFFIX}"], errors="coerce").to_numpy(),
                "value": pd.to_numeric(sub[c.metric], errors="coerce").to_numpy(),
            })
            # several trials of one seed: averaged first, as for the rows; sorted by (seed, image)
            agg = frame.groupby(["seed", "image"], sort=True)[["ref", "value"]].mean().reset_index()
            per_seed = agg.groupby("seed")["ref"].mean().dropna()
            if per_seed.empty:
                continue
            out[c.key] = ReferenceCell(float(per_seed.mean()), float(per_seed.std(ddof=ddof)), len(per_seed))
            d = (agg["ref"] - agg["value"]).to_numpy(dtype=np.float64)
            d = d[np.isfinite(d)]
            if paired and len(d):
                groups.append(d)
                paired_keys.append(c.key)

    # no per-image scores (a study copied without per_image.parquet): the trials' means
    for c in columns:
        col = f"final.{c.key}{REFERENCE_SUFFIX}"
        if c.key in out or col not in trials.columns:
            continue
        values = pd.to_numeric(trials[col][source], errors="coerce")
        per_seed = values.groupby(trials["seed"][source]).mean().dropna()
        if not per_seed.empty:
            out[c.key] = ReferenceCell(float(per_seed.mean()), float(per_seed.std(ddof=ddof)), len(per_seed))

    for key, res in zip(paired_keys, bootstrap_many(groups, n_boot=n_boot, ci=ci, seed=seed), strict=True):
        cell = out[key]
        cell.delta, cell.ci_low, cell.ci_high = res.mean, res.low, res.high
        cell.pairs, cell.sig = res.n, res.excludes_zero
    return out
