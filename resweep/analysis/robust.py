"""Robust aggregates of an ablation row in the style of rliable (Agarwal et al., NeurIPS 2021):
the interquartile mean and the probability of improvement over the baseline row, each with a
stratified percentile-bootstrap CI.

The data of a (row, column) cell is a matrix of final per-image values, seeds x images (several
trials of one seed averaged first; images that not every seed of the row has are left out).
Mapped onto rliable's terms: **runs = seeds, tasks = images** (the evaluation images are a fixed
set; the random thing is the training run), so:

- IQM = mean of the middle 50% of all seed x image values (``scipy.stats.trim_mean(x, 0.25)``,
  what ``rliable.metrics.aggregate_iqm`` computes: ``int(0.25 n)`` values cut at each end);
- P(row > baseline) = mean over images of P(X > Y) with X a seed of the row and Y a seed of the
  baseline row on that image, ties counting 1/2 (the Mann-Whitney U / (m n) of
  ``rliable.metrics.probability_of_improvement``); for a metric where lower is better
  (NIQE) "improvement" is lower;
- CIs: percentile bootstrap, seeds resampled with replacement *within each image* (rliable's
  ``StratifiedBootstrap``; for P the row's and the baseline's seeds independently, rliable's
  ``StratifiedIndependentBootstrap``). A fresh ``numpy.random.default_rng(seed)`` per cell,
  as in :mod:`resweep.analysis.stats`. With one seed the resamples are all the same: the CI is
  a point, so it is not given (fewer than 2 seeds: no CI).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from resweep.analysis.formatting import better
from resweep.analysis.rows import Column
from resweep.analysis.stats import DEFAULT_CI, DEFAULT_N_BOOT, DEFAULT_SEED

ROBUST_FIELDS = ("iqm", "iqm_low", "iqm_high", "poi", "poi_low", "poi_high")


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float = math.nan
    high: float = math.nan


def iqm(values: np.ndarray) -> np.ndarray:
    """Interquartile mean over the last axis (``trim_mean(x, 0.25)``: ``int(0.25 n)`` cut per end)."""
    x = np.sort(np.asarray(values, dtype=np.float64), axis=-1)
    n = x.shape[-1]
    cut = int(0.25 * n)
    return x[..., cut:n - cut].mean(axis=-1)


def iqm_ci(scores: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, ci: float = DEFAULT_CI,
           seed: int = DEFAULT_SEED) -> Estimate:
    """IQM of ``scores`` (seeds x images) with its stratified (per image) bootstrap CI."""
    s = np.asarray(scores, dtype=np.float64)
    point = float(iqm(s.ravel()))
    runs, tasks = s.shape
    if runs < 2:
        return Estimate(point)
    idx = np.random.default_rng(seed).integers(0, runs, size=(n_boot, runs, tasks))
    boot = iqm(s[idx, np.arange(tasks)].reshape(n_boot, -1))
    low, high = np.quantile(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return Estimate(point, float(low), float(high))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) averaged over images; ``x`` (..., runs_x, images), ``y`` (..., runs_y, images)."""
    gt = x[..., :, None, :] > y[..., None, :, :]
    eq = x[..., :, None, :] == y[..., None, :, :]
    per_task = (gt + 0.5 * eq).mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def poi_ci(x: np.ndarray, y: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, ci: float = DEFAULT_CI,
           seed: int = DEFAULT_SEED) -> Estimate:
    """P(X > Y) of two seeds x images matrices (same images, in the same order) with its
    stratified independent bootstrap CI (each side's seeds resampled within each image)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    point = float(probability_of_improvement(x, y))
    (rx, tasks), ry = x.shape, y.shape[0]
    if rx < 2 and ry < 2:
        return Estimate(point)
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, rx, size=(n_boot, rx, tasks))
    iy = rng.integers(0, ry, size=(n_boot, ry, tasks))
    cols = np.arange(tasks)
    boot = probability_of_improvement(x[ix, cols], y[iy, cols])
    low, high = np.quantile(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return Estimate(point, float(low), float(high))


def _matrix(long: pd.DataFrame) -> pd.DataFrame:
    """seeds x images of one row's values; images that some seed lacks are left out."""
    m = long.pivot_table(index="seed", columns="image", values="value", aggfunc="mean")
    return m.dropna(how="all").dropna(axis=1, how="any")


def robust_columns(values: pd.DataFrame, n_rows: int, base_row: int | None, columns: Sequence[Column], *,
                   n_boot: int = DEFAULT_N_BOOT, ci: float = DEFAULT_CI,
                   seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """``<key>:iqm/iqm_low/iqm_high/poi/poi_low/poi_high`` per table row from the long frame of
    :func:`resweep.analysis.ablation.final_values` (NaN where a row has no per-image values;
    P is NaN for the baseline row and for rows sharing no image with it)."""
    out = {f"{c.key}:{f}": np.full(n_rows, np.nan) for c in columns for f in ROBUST_FIELDS}
    if values.empty:
        return out
    for c in columns:
        sub = values[(values["set"] == c.set) & (values["metric"] == c.metric)]
        sub = sub[np.isfinite(sub["value"].to_numpy(dtype=np.float64))]
        if sub.empty:
            continue
        sign = 1.0 if better(c.metric) == "max" else -1.0
        mats = {int(r): _matrix(g) for r, g in sub.groupby("row", sort=True)}
        base = mats.get(base_row) if base_row is not None else None
        for r, m in mats.items():
            if m.empty or r >= n_rows:
                continue
            est = iqm_ci(m.to_numpy(), n_boot=n_boot, ci=ci, seed=seed)
            out[f"{c.key}:iqm"][r], out[f"{c.key}:iqm_low"][r], out[f"{c.key}:iqm_high"][r] = est.value, est.low, est.high
            if base is None or r == base_row:
                continue
            common = m.columns.intersection(base.columns)
            if not len(common):
                continue
            p = poi_ci(sign * m[common].to_numpy(), sign * base[common].to_numpy(), n_boot=n_boot, ci=ci, seed=seed)
            out[f"{c.key}:poi"][r], out[f"{c.key}:poi_low"][r], out[f"{c.key}:poi_high"][r] = p.value, p.low, p.high
    return out
