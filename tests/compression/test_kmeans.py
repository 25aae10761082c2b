"""Batched 1-D k-means against scikit-learn's KMeans, and its invariants (hypothesis)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from gradlab.compression import kmeans_1d, nearest_codeword
from gradlab.compression.codebooks import group_kmeans_codebooks


def _sk(x: np.ndarray, k: int, w: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(x.reshape(-1, 1), sample_weight=w)
    return np.sort(km.cluster_centers_.ravel()), float(km.inertia_)


def test_well_separated_clusters_equal_sklearn():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.1, 80) for m in (-3.0, 0.0, 1.0, 4.0)])
    centers, inertia = _sk(x, 4)
    res = kmeans_1d(torch.tensor(x), 4, n_init=10, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(res.centroids[0].numpy(), centers, atol=1e-10)
    assert float(res.inertia[0]) == pytest.approx(inertia, rel=1e-10)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_gaussian_inertia_matches_sklearn(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal(600)
    centers, inertia = _sk(x, k)
    res = kmeans_1d(torch.tensor(x), k, n_init=10, generator=torch.Generator().manual_seed(1))
    assert float(res.inertia[0]) <= inertia * (1 + 1e-3)  # both are local optima: compare the objective


@pytest.mark.parametrize("k", [2, 4, 8])
def test_lloyd_from_given_init_equals_sklearn(k):
    rng = np.random.default_rng(10 + k)
    x = rng.standard_normal(500)
    w = rng.uniform(0.5, 2.0, 500)
    init = np.sort(rng.choice(x, k, replace=False))
    km = KMeans(n_clusters=k, init=init.reshape(-1, 1), n_init=1, tol=0.0, max_iter=1000).fit(
        x.reshape(-1, 1), sample_weight=w)
    res = kmeans_1d(torch.tensor(x), k, sample_weight=torch.tensor(w), init=torch.tensor(init), max_iter=1000)
    np.testing.assert_allclose(res.centroids[0].numpy(), np.sort(km.cluster_centers_.ravel()), rtol=1e-10)
    assert float(res.inertia[0]) == pytest.approx(km.inertia_, rel=1e-10)


def test_sample_weight_matches_sklearn():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(300)
    w = rng.uniform(0.1, 3.0, 300)
    centers, inertia = _sk(x, 3, w)
    res = kmeans_1d(torch.tensor(x), 3, sample_weight=torch.tensor(w), n_init=10,
                    generator=torch.Generator().manual_seed(0))
    assert float(res.inertia[0]) <= inertia * (1 + 1e-3)


def test_batched_rows_with_padding_equal_separate_runs():
    rng = np.random.default_rng(5)
    a = np.concatenate([rng.normal(m, 0.05, 40) for m in (-1.0, 0.5, 2.0)])
    b = np.concatenate([rng.normal(m, 0.05, 25) for m in (-5.0, 0.0, 5.0)])
    vals = torch.zeros(2, 120, dtype=torch.float64)
    mask = torch.zeros(2, 120, dtype=torch.float64)
    vals[0], mask[0] = torch.tensor(a), 1.0
    vals[1, :75], mask[1, :75] = torch.tensor(b), 1.0
    res = kmeans_1d(vals, 3, sample_weight=mask, n_init=8, generator=torch.Generator().manual_seed(0))
    for row, data in ((0, a), (1, b)):
        np.testing.assert_allclose(res.centroids[row].numpy(), _sk(data, 3)[0], atol=1e-10)


def test_more_clusters_than_distinct_values_does_not_crash():
    res = kmeans_1d(torch.tensor([1.0, 1.0, 2.0, 2.0]), 4, generator=torch.Generator().manual_seed(0))
    assert float(res.inertia[0]) == 0.0
    assert set(res.centroids[0].tolist()) == {1.0, 2.0}


def test_group_codebooks_are_per_group_kmeans():
    torch.manual_seed(0)
    w = torch.cat([torch.randn(4, 50) * 0.1, torch.randn(4, 50) * 2.0]).double()
    idx, books = group_kmeans_codebooks(w, 2, 2, n_init=10, generator=torch.Generator().manual_seed(0))
    assert books.shape == (2, 4)
    rows = torch.tensor([0] * 4 + [1] * 4)
    assert torch.equal(idx, nearest_codeword(w, books[rows]))
    for g in range(2):
        data = w[4 * g:4 * g + 4].reshape(-1)
        _, ref_inertia = _sk(data.numpy(), 4)
        assert torch.equal(books[g], books[g].half().double())  # stored exactly in fp16
        ours = float(((data - books[g][nearest_codeword(data[None], books[g][None])[0]]) ** 2).sum())
        assert ours <= ref_inertia * (1 + 2e-3)  # k-means optimum up to the fp16 rounding of the codewords


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 6), seed=st.integers(0, 1000))
def test_invariants(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, n, generator=g, dtype=torch.float64)
    res = kmeans_1d(x, k, n_init=2, generator=g)
    c = res.centroids
    assert c.shape == (3, k) and bool((c[:, 1:] >= c[:, :-1]).all())
    dist = (x[:, :, None] - c[:, None, :]).abs()
    chosen = torch.gather(dist, 2, res.labels[:, :, None]).squeeze(2)
    assert bool((chosen <= dist.min(2).values + 1e-12).all())  # every point at its nearest centroid
    torch.testing.assert_close(res.inertia, (chosen ** 2).sum(1))
    assert bool((res.inertia <= ((x - x.mean(1, keepdim=True)) ** 2).sum(1) + 1e-9).all())  # never worse than k=1


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        kmeans_1d(torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(TypeError, match="floating"):
        kmeans_1d(torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="k must be"):
        kmeans_1d(torch.tensor([0.0, 1.0]), 0)
    with pytest.raises(ValueError, match="dimensions"):
        kmeans_1d(torch.zeros(2, 2, 2), 2)
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        kmeans_1d(torch.tensor([0.0, 1.0]), 1, sample_weight=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="positive sum"):
        kmeans_1d(torch.tensor([0.0, 1.0]), 1, sample_weight=torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="init must have shape"):
        kmeans_1d(torch.tensor([0.0, 1.0]), 2, init=torch.tensor([0.0]))
    with pytest.raises(ValueError, match="shape of values"):
        kmeans_1d(torch.tensor([0.0, 1.0]), 1, sample_weight=torch.tensor([1.0]))
