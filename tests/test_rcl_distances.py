"""RCL's value-distribution distances against independent references (scipy, loops, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from resweep.losses.distribution_distances import (
    DistributionDistance,
    contrastive_cross_entropy,
    pairwise_bhattacharyya,
    pairwise_emd,
    pairwise_mmd,
)


def test_emd_equals_scipy_wasserstein_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, 5, 4, generator=g, dtype=torch.float64)
    # different scales and shifts so the distances differ a lot between pairs
    b = 0.3 * torch.randn(4, 3, 5, 4, generator=g, dtype=torch.float64) + 0.2
    got = pairwise_emd(a, b)
    assert got.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            want = wasserstein_distance(a[i].flatten().numpy(), b[j].flatten().numpy())
            assert got[i, j].item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_emd_ignores_pixel_positions_and_is_zero_on_itself():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 3, 6, 6, generator=g)
    shuffled = a.flatten(1)[:, torch.randperm(108, generator=g)].view_as(a)
    d = pairwise_emd(a, shuffled)
    assert torch.allclose(d.diagonal(), torch.zeros(2), atol=1e-7)
    assert (d[0, 1] > 0.01) and (d[1, 0] > 0.01)


def test_emd_gradient_is_finite_at_ties():
    # every value tied inside a tensor, and the two tensors identical: sort and |.| both at ties
    a = torch.zeros(2, 3, 4, 4, requires_grad=True)
    b = torch.zeros(2, 3, 4, 4, requires_grad=True)
    pairwise_emd(a, b).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # partial ties: repeated values with a nonzero distance still give finite, nonzero gradients
    c = torch.tensor([[0.0, 0.0, 1.0, 1.0]], requires_grad=True)
    e = torch.tensor([[0.5, 0.5, 0.5, 0.5]], requires_grad=True)
    pairwise_emd(c, e).sum().backward()
    assert torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0


def test_emd_refuses_unequal_sizes():
    with pytest.raises(ValueError, match="same number of values"):
        pairwise_emd(torch.zeros(2, 10), torch.zeros(2, 12))


def _bhattacharyya_reference(x: np.ndarray, y: np.ndarray, centres: np.ndarray, h: float) -> float:
    def hist(v: np.ndarray) -> np.ndarray:
        w = np.exp(-0.5 * ((v[:, None] - centres[None, :]) / h) ** 2)
        w /= w.sum(axis=1, keepdims=True)
        return w.mean(axis=0)

    p, q = hist(x), hist(y)
    return -math.log(np.sqrt(p * q).sum())


def test_bhattacharyya_matches_float64_numpy_reference():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 50, generator=g, dtype=torch.float64) * 0.1
    b = torch.randn(2, 50, generator=g, dtype=torch.float64) * 0.05 + 0.02
    got = pairwise_bhattacharyya(a, b, bins=16, value_range=0.4, bandwidth=0.03, eps=0.0)
    centres = np.linspace(-0.4, 0.4, 16)
    for i in range(3):
        for j in range(2):
            want = _bhattacharyya_reference(a[i].numpy(), b[j].numpy(), centres, 0.03)
            assert got[i, j].item() == pytest.approx(want, rel=1e-9)
    # identical distributions: distance ~ 0; gradients finite even with empty bins
    x = (0.05 * torch.randn(2, 40, generator=g)).requires_grad_()
    d = pairwise_bhattacharyya(x, x.detach().clone(), bins=32)
    assert d.diagonal().abs().max() < 1e-4
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def _mmd_reference(x: np.ndarray, y: np.ndarray, sigmas: tuple[float, ...]) -> float:
    def k(u: np.ndarray, v: np.ndarray) -> float:
        sq = (u[:, None] - v[None, :]) ** 2
        return sum(np.exp(-sq / (2 * s * s)) for s in sigmas).mean()

    return k(x, x) + k(y, y) - 2 * k(x, y)


def test_mmd_matches_float64_reference_and_subsample_is_fixed():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 30, generator=g, dtype=torch.float64) * 0.05
    b = torch.randn(4, 30, generator=g, dtype=torch.float64) * 0.1
    sigmas = (0.01, 0.05)
    got = pairwise_mmd(a, b, bandwidths=sigmas, row_chunk=2)  # chunking crosses row boundaries
    for i in range(3):
        for j in range(4):
            assert got[i, j].item() == pytest.approx(_mmd_reference(a[i].numpy(), b[j].numpy(), sigmas), rel=1e-9)
    d = DistributionDistance(name="mmd", mmd_samples=10, mmd_bandwidths=sigmas, seed=5)
    first, second = d(a, b), d(a, b)
    assert torch.equal(first, second)  # the same positions every call
    # ... and they are the positions a float64 reference computes from the same seed
    idx = torch.randperm(30, generator=torch.Generator().manual_seed(5))[:10].numpy()
    want = _mmd_reference(a[1].numpy()[idx], b[2].numpy()[idx], sigmas)
    assert first[1, 2].item() == pytest.approx(want, rel=1e-9)


def _contrastive_loop_reference(anchors, seconds, distance, tau: float) -> float:
    total = 0.0
    n = len(anchors)
    for j in range(n):
        d = [float(distance(anchors[j][None], seconds[i][None])[0, 0]) for i in range(n)]
        # -log(exp(-d_jj/τ) / Σ_i exp(-d_ji/τ)), written out term by term (float64 python)
        denominator = sum(math.exp(-di / tau) for di in d)
        total += -math.log(math.exp(-d[j] / tau) / denominator)
    return total


@pytest.mark.parametrize("name", ["emd", "bhattacharyya", "mmd"])
def test_contrastive_matrix_equals_loop_over_pairs(name):
    g = torch.Generator().manual_seed(4)
    scales = torch.tensor([0.01, 0.03, 0.05, 0.08, 0.12], dtype=torch.float64).view(-1, 1, 1, 1)
    anchors = torch.randn(5, 3, 6, 6, generator=g, dtype=torch.float64) * scales
    seconds = torch.randn(5, 3, 6, 6, generator=g, dtype=torch.float64) * scales
    distance = DistributionDistance(name=name, value_range=0.3 if name == "bhattacharyya" else None, mmd_samples=None)
    matrix = distance(anchors, seconds)
    for j in range(5):
        for i in range(5):
            single = float(distance(anchors[j][None], seconds[i][None])[0, 0])
            assert matrix[j, i].item() == pytest.approx(single, rel=1e-9, abs=1e-12)
    tau = 0.05
    got = contrastive_cross_entropy(matrix, tau).item()
    assert got == pytest.approx(_contrastive_loop_reference(anchors, seconds, distance, tau), rel=1e-9)


def test_contrastive_loss_is_low_when_positives_are_closest():
    d = torch.full((4, 4), 1.0)
    d.fill_diagonal_(0.0)
    low = contrastive_cross_entropy(d, 0.1)
    high = contrastive_cross_entropy(1.0 - d, 0.1)
    assert low < 0.01 < 10.0 < high
    with pytest.raises(ValueError, match="square"):
        contrastive_cross_entropy(torch.zeros(3, 4), 0.1)
