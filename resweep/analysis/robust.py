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
from resweep.analysis.stats import DEFAULT_CI, DEFAULT_N_BOOT, DEFAULT_SEED, percentile_interval

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


def _counts(idx: np.ndarray, runs: int) -> np.ndarray:
    """(n_boot, runs, tasks) draws -> (n_boot, runs, tasks) counts: how often run i is drawn for task t."""
    n_boot, _, tasks = idx.shape
    flat = (idx * tasks + np.arange(tasks)) + (np.arange(n_boot) * runs * tasks)[:, None, None]
    return np.bincount(flat.ravel(), minlength=n_boot * runs * tasks).reshape(n_boot, runs, tasks).astype(np.float64)


def _interval(boot: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    return percentile_interval(boot, (1 - ci) / 2, overwrite_input=True)  # np.quantile's numbers, faster


def iqm_ci_many(scores: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, ci: float = DEFAULT_CI,
                seed: int = DEFAULT_SEED, chunk: int = 128) -> list[Estimate]:
    """:func:`iqm_ci` of K cells of one shape, ``scores`` (K, runs, tasks): the same draws for
    each (a fresh generator per cell gives them), so one count matrix serves all. A resample's
    IQM without sorting it: the cell's values sorted once; copy ``c`` of value ``k`` sits at
    sorted positions [C(k-1), C(k)) of the resample, so its weight is the overlap of that range
    with the kept middle [cut, n - cut)."""
    s = np.asarray(scores, dtype=np.float64)
    k_cells, runs, tasks = s.shape
    flat = s.reshape(k_cells, -1)
    points = iqm(flat)
    if runs < 2:
        return [Estimate(float(p)) for p in points]
    idx = np.random.default_rng(seed).integers(0, runs, size=(n_boot, runs, tasks))
    w = _counts(idx, runs).reshape(n_boot, -1)  # flattened (run, task) like ``flat``
    n = flat.shape[1]
    cut = int(0.25 * n)
    out: list[Estimate] = []
    for start in range(0, k_cells, chunk):
        v = flat[start:start + chunk]
        order = np.argsort(v, axis=1, kind="stable")
        wk = w[:, order]  # (n_boot, K, n) in each cell's sorted order
        upto = np.cumsum(wk, axis=2)
        keep = np.clip(np.minimum(upto, n - cut) - np.maximum(upto - wk, cut), 0, None)
        boot = np.einsum("bkn,kn->kb", keep, np.take_along_axis(v, order, axis=1)) / (n - 2 * cut)
        low, high = _interval(boot, ci)
        out += [Estimate(float(p), float(lo), float(hi))
                for p, lo, hi in zip(points[start:start + chunk], low, high, strict=True)]
    return out


def iqm_ci(scores: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, ci: float = DEFAULT_CI,
           seed: int = DEFAULT_SEED) -> Estimate:
    """IQM of ``scores`` (seeds x images) with its stratified (per image) bootstrap CI."""
    return iqm_ci_many(np.asarray(scores)[None], n_boot=n_boot, ci=ci, seed=seed)[0]


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) averaged over images; ``x`` (..., runs_x, images), ``y`` (..., runs_y, images)."""
    return _wins(x, y).mean(axis=(-3, -2, -1))


def _wins(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(..., runs_x, runs_y, images): 1 where x beats y, 1/2 on a tie."""
    xe, ye = x[..., :, None, :], y[..., None, :, :]
    return (xe > ye) + 0.5 * (xe == ye)


def poi_ci_many(x: np.ndarray, y: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, ci: float = DEFAULT_CI,
                seed: int = DEFAULT_SEED, chunk: int = 64) -> list[Estimate]:
    """:func:`poi_ci` of K cells of one shape, ``x`` (K, runs_x, tasks), ``y`` (K, runs_y, tasks):
    a resample's P is sum over (i, j, t) of count_x[i, t] * wins[i, j, t] * count_y[j, t] / (m n T)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    wins = _wins(x, y)  # (K, rx, ry, tasks)
    points = wins.mean(axis=(1, 2, 3))
    k_cells, rx, tasks = x.shape
    ry = y.shape[1]
    if rx < 2 and ry < 2:
        return [Estimate(float(p)) for p in points]
    rng = np.random.default_rng(seed)
    wx = _counts(rng.integers(0, rx, size=(n_boot, rx, tasks)), rx)
    wy = _counts(rng.integers(0, ry, size=(n_boot, ry, tasks)), ry)
    out: list[Estimate] = []
    for start in range(0, k_cells, chunk):
        part = np.einsum("bit,kijt->kbjt", wx, wins[start:start + chunk], optimize=True)
        boot = np.einsum("kbjt,bjt->kb", part, wy, optimize=True) / (rx * ry * tasks)
        low, high = _interval(boot, ci)
        out += [Estimate(float(p), float(lo), float(hi))
                for p, lo, hi in zip(points[start:start + chunk], low, high, strict=True)]
    return out


def poi_ci(x: np.ndarray, y: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, ci: float = DEFAULT_CI,
           seed: int = DEFAULT_SEED) -> Estimate:
    """P(X > Y) of two seeds x images matrices (same images, in the same order) with its
    stratified independent bootstrap CI (each side's seeds resampled within each image)."""
    return poi_ci_many(np.asarray(x)[None], np.asarray(y)[None], n_boot=n_boot, ci=ci, seed=seed)[0]


def _matrices(sub: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Row -> (seeds x images values, image names) of one column's long frame (one value per
    (row, seed, image)); seeds without values and images that some seed lacks are left out."""
    rows, row_names = pd.factorize(sub["row"], sort=True)
    seeds, _ = pd.factorize(sub["seed"], sort=True)
    images, image_names = pd.factorize(sub["image"], sort=True)
    cube = np.full((len(row_names), seeds.max() + 1, len(image_names)), np.nan)
    cube[rows, seeds, images] = sub["value"].to_numpy(dtype=np.float64)
    out = {}
    for i, r in enumerate(row_names):
        m = cube[i]
        m = m[~np.isnan(m).all(axis=1)]
        keep = ~np.isnan(m).any(axis=0)
        if m.size and keep.any():
            out[int(r)] = (m[:, keep], np.asarray(image_names)[keep])
    return out


def robust_columns(values: pd.DataFrame, n_rows: int, base_row: int | None, columns: Sequence[Column], *,
                   n_boot: int = DEFAULT_N_BOOT, ci: float = DEFAULT_CI,
                   seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """``<key>:iqm/iqm_low/iqm_high/poi/poi_low/poi_high`` per table row from the long frame of
    :func:`resweep.analysis.ablation.final_values` (NaN where a row has no per-image values;
    P is NaN for the baseline row and for rows sharing no image with it)."""
    out = {f"{c.key}:{f}": np.full(n_rows, np.nan) for c in columns for f in ROBUST_FIELDS}
    if values.empty:
        return out
    iqm_jobs: dict[tuple[int, ...], list[tuple[str, int, np.ndarray]]] = {}
    poi_jobs: dict[tuple[int, ...], list[tuple[str, int, np.ndarray, np.ndarray]]] = {}
    for c in columns:
        sub = values[(values["set"] == c.set) & (values["metric"] == c.metric)]
        sub = sub[np.isfinite(sub["value"].to_numpy(dtype=np.float64))]
        if sub.empty:
            continue
        sign = 1.0 if better(c.metric) == "max" else -1.0
        mats = _matrices(sub)
        base = mats.get(base_row) if base_row is not None else None
        for r, (m, imgs) in mats.items():
            if r >= n_rows:
                continue
            iqm_jobs.setdefault(m.shape, []).append((c.key, r, m))
            if base is None or r == base_row:
                continue
            common, in_m, in_base = np.intersect1d(imgs, base[1], return_indices=True)
            if len(common):
                xm, ym = sign * m[:, in_m], sign * base[0][:, in_base]
                poi_jobs.setdefault((*xm.shape, ym.shape[0]), []).append((c.key, r, xm, ym))
    # cells of one shape share their resample draws: one batched computation per shape
    for jobs in iqm_jobs.values():
        ests = iqm_ci_many(np.stack([j[2] for j in jobs]), n_boot=n_boot, ci=ci, seed=seed)
        for (key, r, _), est in zip(jobs, ests, strict=True):
            out[f"{key}:iqm"][r], out[f"{key}:iqm_low"][r], out[f"{key}:iqm_high"][r] = est.value, est.low, est.high
    for pjobs in poi_jobs.values():
        ests = poi_ci_many(np.stack([j[2] for j in pjobs]), np.stack([j[3] for j in pjobs]), n_boot=n_boot, ci=ci,
                           seed=seed)
        for (key, r, _, _), est in zip(pjobs, ests, strict=True):
            out[f"{key}:poi"][r], out[f"{key}:poi_low"][r], out[f"{key}:poi_high"][r] = est.value, est.low, est.high
    return out
