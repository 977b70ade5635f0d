"""Distances between the *value distributions* of tensors (RCL's ``d``, METHODS.md section 4).

Each tensor (a residual crop ``n̂ = x − f(x)``) is treated as an unordered sample of its values:
pixel positions and channels are ignored, as the paper requires ("``d`` should not assume a
pair-wise relationship between two samples"). Every function here compares *all pairs* of two
stacks at once: ``pairwise_*(a, b)`` with ``a`` of shape ``(M, ...)`` and ``b`` of shape
``(M2, ...)`` returns the ``(M, M2)`` matrix ``D[i, j] = d(a[i], b[j])``, differentiable in both.

Choices the paper (Dong et al., "RCL") leaves open, made here and exposed as knobs by the method:

- **EMD** (the paper's default, Eq. 4): the 1-D Wasserstein-1 distance between the two empirical
  value distributions. For equal-size samples it is exactly the mean absolute difference of the
  sorted values (the optimal 1-D coupling is the monotone one), so no Sinkhorn iteration is
  needed; all pairs are one ``torch.cdist(p=1)`` of the sorted rows. The gradient through
  ``sort`` is a permutation and ``|0|`` has sub-gradient 0 in torch, so it stays finite at ties.
  Unequal sizes are refused (the method always compares equal-size crops).
- **Bhattacharyya distance** ``−log Σ_b sqrt(p_b q_b)`` on a *soft* histogram (a hard histogram
  has zero gradient): each value spreads a Gaussian of width ``bandwidth`` over ``bins`` centres
  on ``[−value_range, value_range]``, normalised so each value adds mass 1. The paper gives no
  bins, range or bandwidth: defaults are 64 bins, the range from the largest absolute value of
  the two stacks (detached, so both share one set of bins) and the bandwidth equal to one bin
  width. ``sqrt`` gets ``eps`` inside and ``log`` gets ``eps`` too, keeping gradients finite for
  empty bins and disjoint histograms. Cost: each value's Gaussian is evaluated only on the bins
  within ``HISTOGRAM_TRUNCATION`` = 7 bandwidths of it (17 of 64 bins by default); the weights left
  out are below ``exp(-24.5) ≈ 2e-11`` of the nearest bin's, far under float32's resolution. Each
  stack is histogrammed once and all pairs are one matrix product.
- **MMD**: the biased estimate of the squared maximum mean discrepancy with a sum of RBF kernels
  ``Σ_σ exp(−(u − v)² / (2σ²))`` over several bandwidths (default 0.01, 0.03, 0.1 on the [0, 1]
  image scale, spanning residual std 2.5 to 25 on the 8-bit scale). The squared, biased form is
  non-negative and smooth (its square root is not differentiable at 0). By default each tensor
  is represented by a random subsample of value positions (the same positions for every tensor
  of one call), redrawn for each call from a seed the caller gives (RCL: run seed, iteration,
  rank), so a run sees fresh positions every step and a resumed run the same ones.
  Cost: the all-pairs kernel means are not summed over the ``K²`` value pairs of every pair of
  tensors. The RBF kernel factorises through a Gaussian of width ``σ/√2``:
  ``exp(−(u−v)²/2σ²) = (1/(σ√(π/2))) ∫ g(u−z) g(v−z) dz`` with ``g(t) = exp(−t²/σ²)``; the
  integral is taken by the trapezoidal rule on a grid of step ``σ/3`` covering the values
  ± 5σ, whose error for this Gaussian integrand is ``2·exp(−π²σ²/2Δ²) = 2·exp(−44) ≈ 1e-19``
  relative (Poisson summation), far below float64's resolution. Each tensor becomes one
  feature row ``F(z) = mean_k g(x_k − z)`` (computed once per tensor) and
  ``MMD²(a, b) = c·‖F_a − F_b‖²``: ``O(M·K·G)`` instead of ``O(M·M2·K²)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

DistanceName = Literal["emd", "bhattacharyya", "mmd"]

__all__ = [
    "DistanceName",
    "DistributionDistance",
    "contrastive_cross_entropy",
    "pairwise_bhattacharyya",
    "pairwise_emd",
    "pairwise_mmd",
    "soft_histogram",
    "soft_histogram_uniform",
]


def _flatten_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(
            f"expected stacks of tensors (M, ...) and (M2, ...), got shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    a2, b2 = a.flatten(1), b.flatten(1)
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(
            f"the tensors compared must hold the same number of values (equal-size crops): "
            f"{a2.shape[1]} vs {b2.shape[1]}"
        )
    return a2, b2


def pairwise_emd(a: Tensor, b: Tensor) -> Tensor:
    """``(M, M2)`` 1-D Wasserstein-1 distances between the value distributions of each pair.

    For two samples of ``K`` values each, ``W1 = (1/K) Σ_k |sort(a)_k − sort(b)_k|``.
    """
    a2, b2 = _flatten_pair(a, b)
    sa = torch.sort(a2, dim=1).values
    sb = torch.sort(b2, dim=1).values
    # cdist(p=1) on the sorted rows is every pair's Σ|·| at once, without an (M, M2, K) tensor.
    # Its backward is 0/0-safe at equal values (the sign of 0 is 0), unlike a hand-written norm.
    dist = torch.cdist(sa.unsqueeze(0), sb.unsqueeze(0), p=1.0).squeeze(0)
    return dist / a2.shape[1]


#: a value's Gaussian vote is evaluated on the bins within this many bandwidths of it; the
#: weights left out are below exp(−7²/2) ≈ 2e-11 of the nearest bin's
HISTOGRAM_TRUNCATION = 7.0
#: values whose votes share one partial histogram (float32 accumulation error ~ this · eps)
_VOTES_PER_PARTIAL = 128


def soft_histogram(
    values: Tensor, centres: Tensor, bandwidth: float | Tensor
) -> Tensor:
    """``(M, bins)`` differentiable histograms of the rows of ``values`` (``(M, K)``).

    Each value's Gaussian weights over the centres are normalised to sum to 1 (a value outside
    the range still counts, at the nearest bins), and each row is averaged: rows sum to 1.
    Every value is weighed against every centre (``(M, K, bins)``); see
    :func:`soft_histogram_uniform` for the windowed form on evenly spaced centres.
    """
    diff = values.unsqueeze(-1) - centres.view(1, 1, -1)  # (M, K, bins)
    logits = -0.5 * (diff / bandwidth) ** 2
    weights = torch.softmax(logits, dim=-1)
    return weights.mean(dim=1)


def soft_histogram_uniform(
    values: Tensor, low: Tensor, step: Tensor, bins: int, bandwidth: Tensor
) -> Tensor:
    """:func:`soft_histogram` on the centres ``low + step·b`` (``b < bins``), each value weighed
    only against the ``W`` bins nearest it (those within ``HISTOGRAM_TRUNCATION`` bandwidths,
    the window slid inwards at the edges): ``(M, K, W)`` work instead of ``(M, K, bins)``."""
    # the nearest bin is up to half a bin from the value: cover T bandwidths beyond that
    half = math.ceil(HISTOGRAM_TRUNCATION * float(bandwidth) / float(step) + 0.5)
    width = 2 * half + 1
    if width >= bins:
        centres = low + step * torch.arange(bins, device=values.device, dtype=values.dtype)
        return soft_histogram(values, centres, bandwidth)
    m, k = values.shape
    position = (values - low) / step  # in bins
    nearest = torch.round(position.detach()).clamp(0, bins - 1).long()
    start = (nearest - half).clamp(0, bins - width)  # (M, K): first bin of each value's window
    window = torch.arange(width, device=values.device)
    # distance to the window's bins, in bandwidths: (position − start − j)·step/h
    ratio = step / bandwidth
    offset = ((position - start.to(values.dtype)) * ratio).unsqueeze(-1) - window.to(values.dtype) * ratio
    weights = torch.softmax(offset.square().mul(-0.5), dim=-1)  # (M, K, W)
    # A scatter adds its votes one by one: K·W of them into one float32 bin would carry an error
    # ~K·eps (1e-3 at K = 12288), and the distances of similar histograms are small differences.
    # Each run of _VOTES_PER_PARTIAL values fills its own partial histogram; the partials are
    # then summed pairwise by ``sum``.
    parts = -(-k // _VOTES_PER_PARTIAL)
    part = torch.arange(k, device=values.device).div(_VOTES_PER_PARTIAL, rounding_mode="floor") * bins
    target = ((start + part).unsqueeze(-1) + window).reshape(m, k * width)
    partial = values.new_zeros(m, parts * bins).scatter_add(1, target, weights.reshape(m, k * width))
    return partial.view(m, parts, bins).sum(dim=1) / k


def pairwise_bhattacharyya(
    a: Tensor,
    b: Tensor,
    *,
    bins: int = 64,
    value_range: float | None = None,
    bandwidth: float | None = None,
    eps: float = 1e-10,
) -> Tensor:
    """``(M, M2)`` Bhattacharyya distances ``−log Σ sqrt(p q)`` of soft value histograms.

    ``value_range`` (default: the largest |value| of both stacks, detached) bounds the bin
    centres ``[−range, range]``; ``bandwidth`` defaults to one bin width.
    """
    a2, b2 = _flatten_pair(a, b)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    if value_range is None:
        top = torch.maximum(a2.detach().abs().max(), b2.detach().abs().max())
        value_range_t = top.clamp_min(1e-6)
    else:
        if value_range <= 0:
            raise ValueError(f"value_range must be > 0, got {value_range}")
        value_range_t = torch.tensor(float(value_range), device=a2.device, dtype=a2.dtype)
    width = 2.0 * value_range_t / (bins - 1)
    h = width if bandwidth is None else torch.as_tensor(bandwidth, device=a2.device, dtype=a2.dtype)
    # once per tensor; the centres are -range + width·b, b = 0..bins-1
    p = soft_histogram_uniform(a2, -value_range_t, width, bins, h)
    q = soft_histogram_uniform(b2, -value_range_t, width, bins, h)
    # Σ sqrt(p q) of similar histograms is ~1, where float32 keeps ~7 digits and −log of it
    # little: with Σp = Σq = 1, Σ √p̃ √q̃ = 1 + bins·eps − ½ Σ (√p̃ − √q̃)² (p̃ = p + eps), so
    # the distance is −log1p(bins·eps − H²) with H² from differences, exact for small H².
    # (M, M2, bins) is small next to the histograms' (M, K, W).
    rp, rq = torch.sqrt(p + eps), torch.sqrt(q + eps)
    hellinger = 0.5 * ((rp.unsqueeze(1) - rq.unsqueeze(0)) ** 2).sum(-1)
    # the coefficient is <= 1 up to the eps terms and >= eps: clamp so the distance stays >= 0.
    return -torch.log1p((bins * eps - hellinger).clamp(eps - 1.0, 0.0))


#: quadrature step of the MMD kernel factorisation, in bandwidths σ, and the margin the grid
#: extends beyond the values (module docstring)
MMD_GRID_STEP = 1.0 / 3.0
MMD_GRID_MARGIN = 5.0
#: elements of one ``(rows, K, G)`` block of MMD features (bounds memory with all values)
_MMD_BLOCK = 1 << 24


def _rbf_features(x: Tensor, sigma: float, low: float, high: float) -> Tensor:
    """``(M, G)`` rows ``F(z_g) = mean_k exp(−(x_k − z_g)²/σ²)`` on the grid of step
    ``MMD_GRID_STEP·σ`` covering ``[low, high]`` ± ``MMD_GRID_MARGIN·σ``, scaled so that
    ``F_a · F_b`` is the mean RBF kernel ``mean_kl exp(−(a_k − b_l)²/2σ²)``."""
    step = MMD_GRID_STEP * sigma
    start = low - MMD_GRID_MARGIN * sigma
    count = math.ceil((high - low + 2 * MMD_GRID_MARGIN * sigma) / step) + 1
    grid = start + step * torch.arange(count, device=x.device, dtype=x.dtype)
    # trapezoidal weight Δ / (σ·sqrt(π/2)), split evenly between the two factors
    scale = math.sqrt(step / (sigma * math.sqrt(math.pi / 2.0)))
    rows = max(1, _MMD_BLOCK // max(1, x.shape[1] * count))
    out = []
    for i in range(0, x.shape[0], rows):
        r = x[i : i + rows]
        # capped at exp(−80) ≈ 2e-35: farther grid points would give denormals, which the CPU's
        # exp handles ~10x slower, for terms below any float's resolution of the sums
        out.append(torch.exp(-(((r.unsqueeze(-1) - grid) / sigma) ** 2).clamp(max=80.0)).mean(dim=1))
    return torch.cat(out) * scale


def pairwise_mmd(
    a: Tensor,
    b: Tensor,
    *,
    bandwidths: Sequence[float] = (0.01, 0.03, 0.1),
    row_chunk: int = 8,
) -> Tensor:
    """``(M, M2)`` biased squared MMD with a sum of RBF kernels, on all values of each row.

    ``MMD² = mean k(a, a') + mean k(b, b') − 2 mean k(a, b) = Σ_σ ‖F_σ(a) − F_σ(b)‖²`` with the
    kernel-mean features of :func:`_rbf_features` (exact to ~1e-19 relative: module docstring);
    the differences are taken before squaring, so small distances keep their precision.
    ``row_chunk`` rows of ``a`` at a time bound the ``(chunk, M2, G)`` difference tensor.
    """
    a2, b2 = _flatten_pair(a, b)
    if not bandwidths:
        raise ValueError("MMD needs at least one bandwidth")
    both = torch.cat([a2.detach().flatten(), b2.detach().flatten()])
    low, high = float(both.min()), float(both.max())
    fa = torch.cat([_rbf_features(a2, float(s), low, high) for s in bandwidths], dim=1)  # (M, ΣG)
    fb = torch.cat([_rbf_features(b2, float(s), low, high) for s in bandwidths], dim=1)  # (M2, ΣG)
    chunk = max(1, row_chunk)
    rows = [((fa[i : i + chunk].unsqueeze(1) - fb.unsqueeze(0)) ** 2).sum(-1) for i in range(0, fa.shape[0], chunk)]
    return torch.cat(rows)


@dataclass(frozen=True)
class DistributionDistance:
    """A configured ``d``: call it on two stacks to get their ``(M, M2)`` distance matrix.

    ``mmd_samples`` (MMD only): compare a random subsample of this many value positions (the
    same for every tensor of one call), drawn from the call's ``sample_seed`` (default
    ``seed``); ``None`` compares all values.
    """

    name: DistanceName = "emd"
    bins: int = 64
    value_range: float | None = None
    bandwidth: float | None = None
    mmd_bandwidths: tuple[float, ...] = (0.01, 0.03, 0.1)
    mmd_samples: int | None = 256
    seed: int = 0

    def _subsample(self, a: Tensor, b: Tensor, sample_seed: int | None) -> tuple[Tensor, Tensor]:
        a2, b2 = _flatten_pair(a, b)
        k = a2.shape[1]
        if self.mmd_samples is None or self.mmd_samples >= k:
            return a2, b2
        g = torch.Generator().manual_seed(self.seed if sample_seed is None else sample_seed)
        index = torch.randperm(k, generator=g)[: self.mmd_samples].to(a2.device)
        return a2.index_select(1, index), b2.index_select(1, index)

    def __call__(self, a: Tensor, b: Tensor, sample_seed: int | None = None) -> Tensor:
        """``(M, M2)`` distances; ``sample_seed`` draws MMD's value positions (ignored otherwise)."""
        if self.name == "emd":
            return pairwise_emd(a, b)
        if self.name == "bhattacharyya":
            return pairwise_bhattacharyya(
                a, b, bins=self.bins, value_range=self.value_range, bandwidth=self.bandwidth
            )
        if self.name == "mmd":
            sa, sb = self._subsample(a, b, sample_seed)
            return pairwise_mmd(sa, sb, bandwidths=self.mmd_bandwidths)
        raise ValueError(f"unknown distance '{self.name}'; choose emd, bhattacharyya or mmd")


def contrastive_cross_entropy(
    distances: Tensor, temperature: float, reduction: Literal["sum", "mean"] = "sum"
) -> Tensor:
    """RCL's Eq. 3 over a square distance matrix, all anchors at once.

    ``distances[j, i] = d(anchor crop of image j, second crop of image i)``: row ``j`` is one
    anchor, its positive is the diagonal entry and the other ``N`` entries are its negatives,
    so ``−log(exp(−D_jj/τ) / Σ_i exp(−D_ji/τ))`` is a cross-entropy with target ``j``. Algorithm 1
    sums over the ``N + 1`` anchors (``reduction="sum"``).
    """
    if distances.dim() != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"expected a square (N+1)x(N+1) matrix, got {tuple(distances.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = -distances / temperature
    target = torch.arange(distances.shape[0], device=distances.device)
    return torch.nn.functional.cross_entropy(logits, target, reduction=reduction)
