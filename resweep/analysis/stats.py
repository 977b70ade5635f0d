"""Statistics of the analysis layer: paired bootstrap confidence intervals and Pareto fronts.

The bootstrap is the percentile bootstrap of the mean of paired differences. Every cell uses
a fresh ``numpy.random.default_rng(seed)`` and draws its resamples as one
``rng.integers(0, n, size=(n_boot, n))`` matrix, so a result depends only on the differences
(in their given order), ``n_boot``, ``ci`` and ``seed`` -- never on which other cells were
computed before it. Consequence used for speed: cells with the same number of pairs share one
resample matrix, turned into a count matrix ``W`` (``W[b, j]`` = times pair ``j`` is drawn in
resample ``b``) so all their resample means come from one matrix product.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_N_BOOT = 2000
DEFAULT_CI = 0.95
DEFAULT_SEED = 0
MIN_PAIRS = 2  # below this a resampling interval means nothing
# cells per selection: a (2048, n_boot) copy. (The product stays (n_boot, cells) as it was: BLAS
# may round the transposed product differently in the last bit, and the CIs must not move.)
_CHUNK = 2048


@dataclass(frozen=True)
class BootstrapCI:
    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return bool(np.isfinite(self.low) and (self.low > 0 or self.high < 0))


def _counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) count matrix of the resamples a fresh generator with ``seed`` draws."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    flat = idx + (np.arange(n_boot) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def percentile_interval(boot: np.ndarray, alpha: float, overwrite_input: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``np.quantile(boot, [alpha, 1 - alpha], axis=1)`` (its default linear method), bit for
    bit, for a 2-D ``boot`` (cells, resamples): numpy partitions along a strided axis and finds
    the minimum and maximum too; here each cell's resamples stay contiguous and only the two
    order statistics each quantile needs are selected (the report's slowest step).
    ``overwrite_input``: partition ``boot`` itself (no copy of 10^7 numbers)."""
    rows = np.ascontiguousarray(boot, dtype=np.float64)
    n = rows.shape[1]
    q = np.array([alpha, 1.0 - alpha])
    virtual = (n - 1) * q  # numpy's 'linear' virtual index, and its neighbours below
    prev = np.floor(virtual)
    nxt = prev + 1
    prev[virtual >= n - 1], nxt[virtual >= n - 1] = n - 1, n - 1
    prev[virtual < 0], nxt[virtual < 0] = 0, 0
    gamma = virtual - prev
    prev_i, next_i = prev.astype(np.intp), nxt.astype(np.intp)
    nan = np.isnan(rows).any(axis=1)  # numpy's NaN result for a cell holding a NaN
    # two single selections (numpy's partition with several kth is ~4x slower here): the upper
    # kth, then the lower one among the values left of it; the order statistic below the lower
    # kth is the largest value left of it, the one above the upper kth the smallest right of it
    lower, upper = int(next_i[0]), int(prev_i[1])
    part = rows if overwrite_input or rows is not boot else rows.copy()  # ours to reorder
    if lower <= upper:
        part.partition(upper, axis=1)
        if lower < upper:
            part[:, :upper].partition(lower, axis=1)
    else:
        part.partition(np.unique(np.concatenate([prev_i, next_i])), axis=1)
    if lower <= upper:
        below = part[:, :lower].max(axis=1) if prev_i[0] < lower else part[:, lower]
        above = part[:, upper + 1:].min(axis=1) if next_i[1] > upper else part[:, upper]
        ends = [(below, part[:, lower]), (part[:, upper], above)]
    else:  # alpha > 1/2: the plain way
        ends = [(part[:, prev_i[j]], part[:, next_i[j]]) for j in range(len(q))]
    out = []
    for j in range(len(q)):
        a, b = ends[j]
        diff = b - a  # numpy's _lerp, including its switch for t >= 1/2
        value = b - diff * (1 - gamma[j]) if gamma[j] >= 0.5 else a + diff * gamma[j]
        value[nan] = np.nan
        out.append(value)
    return out[0], out[1]


def paired_bootstrap_ci(
    diffs: np.ndarray | Sequence[float],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = DEFAULT_SEED,
) -> BootstrapCI:
    """Percentile bootstrap CI of the mean of ``diffs`` (row minus baseline, one per pair)."""
    return bootstrap_many([np.asarray(diffs, dtype=np.float64)], n_boot=n_boot, ci=ci, seed=seed)[0]


def bootstrap_many(
    groups: Sequence[np.ndarray],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = DEFAULT_SEED,
) -> list[BootstrapCI]:
    """:func:`paired_bootstrap_ci` of many groups, vectorised over groups of equal size.

    Each group is a 1-D array of paired differences, or 2-D ``(n, k)`` for ``k`` metrics that
    share the same pairs (one CI per column then; results are flattened group by group).
    Non-finite differences must be removed by the caller (pairing happens before this).
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    alpha = (1.0 - ci) / 2.0
    mats = [np.asarray(g, dtype=np.float64).reshape(len(g), -1) for g in groups]
    out: list[list[BootstrapCI]] = [[] for _ in mats]
    by_size: dict[int, list[int]] = {}
    for i, m in enumerate(mats):
        by_size.setdefault(m.shape[0], []).append(i)
    for n, members in by_size.items():
        if n < MIN_PAIRS:
            for i in members:
                means = mats[i].mean(axis=0) if n else np.full(mats[i].shape[1], np.nan)
                out[i] = [BootstrapCI(float(m), np.nan, np.nan, n) for m in means]
            continue
        stacked = np.concatenate([mats[i] for i in members], axis=1)  # (n, sum k)
        resampled = _counts(n, n_boot, seed) @ stacked / n  # (n_boot, sum k)
        low, high = np.empty(resampled.shape[1]), np.empty(resampled.shape[1])
        for a in range(0, resampled.shape[1], _CHUNK):  # each cell's means made contiguous, a chunk at a time
            low[a:a + _CHUNK], high[a:a + _CHUNK] = percentile_interval(resampled[:, a:a + _CHUNK].T, alpha)
        point = stacked.mean(axis=0)
        col = 0
        for i in members:
            k = mats[i].shape[1]
            out[i] = [
                BootstrapCI(float(point[c]), float(low[c]), float(high[c]), n) for c in range(col, col + k)
            ]
            col += k
    return [ci_ for group in out for ci_ in group]


def pareto_mask(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n, k); ``modes``: max/min each.

    Rows with a non-finite value are never on the front.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(modes):
        raise ValueError("values must be (n, len(modes))")
    sign = np.array([1.0 if m == "max" else -1.0 for m in modes])
    v = values * sign  # larger is better everywhere
    finite = np.isfinite(v).all(axis=1)
    mask = np.zeros(len(v), dtype=bool)
    idx = np.flatnonzero(finite)
    if idx.size == 0:
        return mask
    w = v[idx]
    if w.shape[1] == 2:  # a sweep in O(n log n): quality against cost, the common case
        mask[idx[~_dominated_2d(w)]] = True
        return mask
    # j dominates i when w[j] >= w[i] everywhere and > somewhere; chunked to bound memory
    dominated = np.zeros(len(w), dtype=bool)
    for start in range(0, len(w), 512):
        block = w[start:start + 512]
        ge = (w[None, :, :] >= block[:, None, :]).all(axis=2)
        gt = (w[None, :, :] > block[:, None, :]).any(axis=2)
        dominated[start:start + 512] = (ge & gt).any(axis=1)
    mask[idx[~dominated]] = True
    return mask


def _dominated_2d(w: np.ndarray) -> np.ndarray:
    """Rows of ``w`` (n, 2; larger is better) that another row dominates. Visited by x
    descending: a row is dominated by an earlier x-group whose best y is >= its y, or by a row
    of its own x-group with a larger y."""
    order = np.lexsort((-w[:, 1], -w[:, 0]))
    x, y = w[order, 0], w[order, 1]
    dominated = np.zeros(len(w), dtype=bool)
    best_before = -np.inf
    start = 0
    while start < len(x):
        end = start + 1
        while end < len(x) and x[end] == x[start]:
            end += 1
        group_best = y[start]  # sorted by y descending within the group
        for i in range(start, end):
            dominated[order[i]] = best_before >= y[i] or y[i] < group_best
        best_before = max(best_before, group_best)
        start = end
    return dominated


# --------------------------------------------------------------------------- importance
MIN_IMPORTANCE_TRIALS = 6


@dataclass
class Importance:
    """Hyperparameter importances per objective (``None`` + ``note`` when skipped)."""

    values: dict[str, dict[str, float]]  # objective metric -> knob -> importance (sums to 1)
    evaluator: str
    note: str


def param_importance(
    params: dict[str, list],
    objectives: Sequence[tuple[str, str, Sequence[float]]],
    *,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
    seed: int = 0,
) -> Importance:
    """Importances from Optuna's evaluators on an in-memory study rebuilt from finished trials.

    ``params``: knob -> one value per trial (numbers stay numeric; anything else, lists as JSON
    text included, becomes categorical); ``objectives``: (metric, mode, values per trial).
    fANOVA when scikit-learn is installed (Optuna's fANOVA needs it), PED-ANOVA otherwise.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    varying = {k: v for k, v in params.items() if len({_hashable(x) for x in v}) > 1}
    if len(varying) < 2:
        return Importance({}, "", f"skipped: {len(varying)} knob(s) vary; importance needs at least 2")
    try:
        import sklearn  # noqa: F401  # Optuna's fANOVA is built on scikit-learn's forests

        evaluator: Any = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        name = "fANOVA (optuna.importance.FanovaImportanceEvaluator)"
    except ImportError:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        name = "PED-ANOVA (optuna.importance.PedAnovaImportanceEvaluator; fANOVA needs scikit-learn)"

    dists, encoded = {}, {}
    for knob, values in varying.items():
        dists[knob], encoded[knob] = _distribution(values, CategoricalDistribution, FloatDistribution, IntDistribution)
    out: dict[str, dict[str, float]] = {}
    notes = []
    # one in-memory study per set of trials (objectives reported by the same trials share one:
    # adding trials is the slow part, Optuna deep-copies each)
    by_mask: dict[bytes, list[tuple[str, str, np.ndarray]]] = {}
    for metric, mode, target in objectives:
        y = np.asarray(target, dtype=np.float64)
        ok = np.isfinite(y)
        if ok.sum() < min_trials:
            notes.append(f"{metric}: skipped, {int(ok.sum())} finished trials (needs {min_trials})")
            continue
        by_mask.setdefault(ok.tobytes(), []).append((metric, mode, y))
    for mask_bytes, group in by_mask.items():
        ok = np.frombuffer(mask_bytes, dtype=bool)
        study = optuna.create_study(directions=["minimize"] * len(group))
        study.add_trials([
            optuna.trial.create_trial(
                values=[float(y[i]) for _, _, y in group],
                params={k: encoded[k][i] for k in varying}, distributions=dists,
            )
            for i in np.flatnonzero(ok)
        ])
        for j, (metric, mode, _) in enumerate(group):
            sign = -1.0 if mode == "max" else 1.0  # PED-ANOVA treats low target values as good

            def target(t: Any, j: int = j, sign: float = sign) -> float:
                return sign * t.values[j]

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "assumes low target values are better": they are
                    out[metric] = dict(optuna.importance.get_param_importances(study, evaluator=evaluator, target=target))
            except Exception as exc:  # an evaluator can refuse degenerate data: say so, keep the report
                notes.append(f"{metric}: {type(exc).__name__}: {exc}")
    return Importance(out, name, "; ".join(notes))


def _hashable(x: Any) -> Any:
    return repr(x) if isinstance(x, list | dict) else x


def _distribution(values: list, Categorical: Any, Float: Any, Int: Any) -> tuple[Any, list]:
    numeric = all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)
        and np.isfinite(v) for v in values
    )
    if numeric:
        arr = np.asarray(values, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        log = lo > 0 and hi / lo >= 100  # learning rates and such: importance on the log scale
        if all(float(v).is_integer() for v in arr) and all(isinstance(v, int | np.integer) for v in values):
            return Int(int(lo), int(hi), log=log and lo >= 1), [int(v) for v in arr]
        return Float(lo, hi, log=log), [float(v) for v in arr]
    text = [json.dumps(v) if isinstance(v, list | dict) else str(v) for v in values]
    return Categorical(sorted(set(text))), text
