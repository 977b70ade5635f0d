"""Distances between the *value distributions* of tensors (RCL's ``d``, METHODS.md section 4).

Each tensor (a residual crop ``n̂ = x − f(x)``) is treated as an unordered sample of its values:
pixel positions and channels are ignored, as the paper requires ("``d`` should not assume a
pair-wise relationship between two samples"). Every function here compares *all pairs* of two
stacks at once: ``pairwise_*(a, b)`` with ``a`` of shape ``(M, ...)`` and ``b`` of shape
``(M2, ...)`` returns the ``(M, M2)`` matrix ``D[i, j] = d(a[i], b[j])``, differentiable in both.

Choices the paper (Li et al., "RCL") leaves open, made here and exposed as knobs by the method:

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
  empty bins and disjoint histograms.
- **MMD**: the biased estimate of the squared maximum mean discrepancy with a sum of RBF kernels
  ``Σ_σ exp(−(u − v)² / (2σ²))`` over several bandwidths (default 0.01, 0.03, 0.1 on the [0, 1]
  image scale, spanning residual std 2.5 to 25 on the 8-bit scale). The squared, biased form is
  non-negative and smooth (its square root is not differentiable at 0). Comparing all values is
  quadratic in their number, so by default each tensor is represented by a fixed random
  subsample of positions (the same positions for every tensor, drawn once from a seed).
"""

from __future__ import annotations

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


def soft_histogram(
    values: Tensor, centres: Tensor, bandwidth: float | Tensor
) -> Tensor:
    """``(M, bins)`` differentiable histograms of the rows of ``values`` (``(M, K)``).

    Each value's Gaussian weights over the centres are normalised to sum to 1 (a value outside
    the range still counts, at the nearest bins), and each row is averaged: rows sum to 1.
    """
    diff = values.unsqueeze(-1) - centres.view(1, 1, -1)  # (M, K, bins)
    logits = -0.5 * (diff / bandwidth) ** 2
    weights = torch.softmax(logits, dim=-1)
    return weights.mean(dim=1)


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
    steps = torch.linspace(-1.0, 1.0, bins, device=a2.device, dtype=a2.dtype)
    centres = steps * value_range_t
    width = 2.0 * value_range_t / (bins - 1)
    h = width if bandwidth is None else torch.as_tensor(bandwidth, device=a2.device, dtype=a2.dtype)
    p = soft_histogram(a2, centres, h)
    q = soft_histogram(b2, centres, h)
    coefficient = torch.sqrt(p + eps) @ torch.sqrt(q + eps).T
    # Σ sqrt(p q) <= 1 up to the eps terms; clamp so the distance stays >= 0.
    return -torch.log(coefficient.clamp(eps, 1.0))


def pairwise_mmd(
    a: Tensor,
    b: Tensor,
    *,
    bandwidths: Sequence[float] = (0.01, 0.03, 0.1),
    row_chunk: int = 8,
) -> Tensor:
    """``(M, M2)`` biased squared MMD with a sum of RBF kernels, on all values of each row.

    ``MMD² = mean k(a, a') + mean k(b, b') − 2 mean k(a, b)``; rows are processed ``row_chunk``
    at a time to bound the ``(chunk, M2, K, K)`` kernel tensor.
    """
    a2, b2 = _flatten_pair(a, b)
    if not bandwidths:
        raise ValueError("MMD needs at least one bandwidth")
    gammas = [1.0 / (2.0 * float(s) ** 2) for s in bandwidths]

    def mean_kernel(x: Tensor, y: Tensor) -> Tensor:
        # x: (m, K), y: (n, K) -> (m, n) mean over all value pairs of Σ_σ k_σ
        sq = (x.unsqueeze(1).unsqueeze(-1) - y.unsqueeze(0).unsqueeze(-2)) ** 2  # (m, n, K, K)
        return sum(torch.exp(-g * sq) for g in gammas).mean(dim=(-2, -1))  # type: ignore[union-attr]

    def self_kernel(x: Tensor) -> Tensor:
        # (m,) mean kernel of each row with itself, without the cross terms between rows
        out = []
        for i in range(0, x.shape[0], row_chunk):
            r = x[i : i + row_chunk]
            sq = (r.unsqueeze(-1) - r.unsqueeze(-2)) ** 2  # (c, K, K)
            out.append(sum(torch.exp(-g * sq) for g in gammas).mean(dim=(-2, -1)))  # type: ignore[union-attr]
        return torch.cat(out)

    kaa = self_kernel(a2)  # (M,)
    kbb = self_kernel(b2)  # (M2,)
    kab = torch.cat([mean_kernel(a2[i : i + row_chunk], b2) for i in range(0, a2.shape[0], row_chunk)])
    return (kaa[:, None] + kbb[None, :] - 2.0 * kab).clamp_min(0.0)


@dataclass(frozen=True)
class DistributionDistance:
    """A configured ``d``: call it on two stacks to get their ``(M, M2)`` distance matrix.

    ``mmd_samples`` (MMD only): compare a fixed random subsample of this many value positions
    (drawn once from ``seed``, shared by every tensor); ``None`` compares all values.
    """

    name: DistanceName = "emd"
    bins: int = 64
    value_range: float | None = None
    bandwidth: float | None = None
    mmd_bandwidths: tuple[float, ...] = (0.01, 0.03, 0.1)
    mmd_samples: int | None = 256
    seed: int = 0

    def _subsample(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        a2, b2 = _flatten_pair(a, b)
        k = a2.shape[1]
        if self.mmd_samples is None or self.mmd_samples >= k:
            return a2, b2
        g = torch.Generator().manual_seed(self.seed)
        index = torch.randperm(k, generator=g)[: self.mmd_samples].to(a2.device)
        return a2.index_select(1, index), b2.index_select(1, index)

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        if self.name == "emd":
            return pairwise_emd(a, b)
        if self.name == "bhattacharyya":
            return pairwise_bhattacharyya(
                a, b, bins=self.bins, value_range=self.value_range, bandwidth=self.bandwidth
            )
        if self.name == "mmd":
            sa, sb = self._subsample(a, b)
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
