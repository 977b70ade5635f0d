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
    soft_histogram,
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


def test_mmd_matches_float64_reference_and_subsample_follows_the_seed():
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
    assert torch.equal(first, second)  # without a sample seed: the distance's own seed
    assert torch.equal(d(a, b, sample_seed=7), d(a, b, sample_seed=7))
    assert not torch.allclose(d(a, b, sample_seed=7), first)  # another seed, other positions
    # ... and they are the positions a float64 reference computes from the same seed
    for seed, matrix in ((5, first), (7, d(a, b, sample_seed=7))):
        idx = torch.randperm(30, generator=torch.Generator().manual_seed(seed))[:10].numpy()
        want = _mmd_reference(a[1].numpy()[idx], b[2].numpy()[idx], sigmas)
        assert matrix[1, 2].item() == pytest.approx(want, rel=1e-9)


def _pairwise_mmd_direct(a: torch.Tensor, b: torch.Tensor, sigmas: tuple[float, ...]) -> torch.Tensor:
    """The kernel sums over all K² value pairs of every pair of rows (the former implementation)."""
    def mean_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sq = (x[:, None, :, None] - y[None, :, None, :]) ** 2
        return sum(torch.exp(-sq / (2 * s * s)) for s in sigmas).mean(dim=(-2, -1))

    kaa = mean_kernel(a, a).diagonal()
    kbb = mean_kernel(b, b).diagonal()
    return kaa[:, None] + kbb[None, :] - 2 * mean_kernel(a, b)


def test_mmd_by_quadrature_equals_the_all_pairs_kernel_sums_with_gradients():
    """The grid factorisation against the K² sums, float64, values and gradients, with wide and
    skewed residuals (the grid follows the values) and near-identical rows (small distances)."""
    g = torch.Generator().manual_seed(8)
    scales = torch.tensor([0.005, 0.02, 0.08, 0.3], dtype=torch.float64).view(-1, 1)
    a = torch.randn(4, 64, generator=g, dtype=torch.float64) * scales
    b = torch.randn(4, 64, generator=g, dtype=torch.float64).exp() * scales - 0.1
    b[0] = a[0] + 1e-4 * torch.randn(64, generator=g, dtype=torch.float64)
    sigmas = (0.01, 0.03, 0.1)
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    got, want = pairwise_mmd(a1, b1, bandwidths=sigmas), _pairwise_mmd_direct(a2, b2, sigmas)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-15)
    assert 0 < got[0, 0] < 1e-4  # a small distance keeps its digits
    weights = torch.rand(4, 4, generator=g, dtype=torch.float64)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-7, atol=1e-12)
    # float32 (what training uses): close to the float64 sums
    got32 = pairwise_mmd(a.float(), b.float(), bandwidths=sigmas).double()
    torch.testing.assert_close(got32, want.detach(), rtol=1e-4, atol=1e-8)


def test_windowed_histograms_equal_the_dense_ones_in_float32_and_float64():
    """Bhattacharyya's windowed soft histograms (and the Hellinger form of the coefficient)
    against the dense (M, K, bins) histograms of :func:`soft_histogram` and ``−log Σ√(pq)`` in
    float64, with many values (partial sums) and a range the values exceed (edge windows)."""
    g = torch.Generator().manual_seed(9)
    scales = torch.linspace(0.01, 0.1, 6, dtype=torch.float64).view(-1, 1)
    a = torch.randn(6, 3000, generator=g, dtype=torch.float64) * scales
    b = torch.randn(6, 3000, generator=g, dtype=torch.float64) * scales.flip(0)
    b[0] = a[0] + 1e-4 * torch.randn(3000, generator=g, dtype=torch.float64)  # a near-0 distance
    for value_range, bandwidth in ((None, None), (0.15, 0.01), (0.3, None)):
        top = float(torch.maximum(a.abs().max(), b.abs().max())) if value_range is None else value_range
        centres = torch.linspace(-top, top, 64, dtype=torch.float64)
        h = bandwidth or 2 * top / 63
        p, q = soft_histogram(a, centres, h), soft_histogram(b, centres, h)
        want = -torch.log((torch.sqrt(p + 1e-10) @ torch.sqrt(q + 1e-10).T).clamp(1e-10, 1.0))
        got = pairwise_bhattacharyya(a, b, value_range=value_range, bandwidth=bandwidth)
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-12)
        got32 = pairwise_bhattacharyya(a.float(), b.float(), value_range=value_range, bandwidth=bandwidth)
        torch.testing.assert_close(got32.double(), want, rtol=1e-4, atol=1e-7)
    assert 0 < want[0, 0] < 1e-5
    # gradients of the windowed form equal the dense form's (float64)
    x1, x2 = a[:3].clone().requires_grad_(), a[:3].clone().requires_grad_()
    pairwise_bhattacharyya(x1, b[:3], value_range=0.3).sum().backward()
    centres = torch.linspace(-0.3, 0.3, 64, dtype=torch.float64)
    p, q = soft_histogram(x2, centres, 0.6 / 63), soft_histogram(b[:3], centres, 0.6 / 63)
    (-torch.log(torch.sqrt(p + 1e-10) @ torch.sqrt(q + 1e-10).T)).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-10)


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
