"""Batched, weighted one-dimensional k-means (Lloyd's algorithm with k-means++ seeding) in torch.

Codebook quantisation (JLCM, arXiv 2309.17361; Deep Compression's weight sharing) initialises each group's
``K = 2^b`` codewords by 1-D k-means on the group's weights, minimising

.. math:: \\sum_i w_i\\,(x_i - c_{a(i)})^2, \\qquad a(i) = \\arg\\min_j |x_i - c_j|.

Why our own torch k-means rather than :class:`sklearn.cluster.KMeans` (which the tests use as the reference):

* **batched**: the ``G`` groups of a layer (rows of different lengths, padded with zero sample weight) and the
  ``n_init`` restarts are one ``(G·n_init, n)`` problem: no Python loop over groups and no per-call overhead;
* **1-D structure**: in 1-D every cluster is a run of the sorted values, so after one sort a Lloyd iteration
  is ``k`` ``searchsorted`` lookups of the centroid midpoints and differences of prefix sums (``O(k log n)``
  per iteration instead of ``O(n)``; never an ``n × K`` distance matrix, so 8-bit codebooks on large layers
  fit); the returned codebooks are sorted, which the proximal mapping search needs (a weight's
  *neighbouring* codewords);
* it runs on the weights' device and dtype (GPU included), with a ``torch.Generator`` for reproducibility.

Seeding is greedy k-means++ (as scikit-learn's: the best of ``2 + ⌊ln k⌋`` candidates drawn with probability
proportional to the weighted squared distance), or given ``init`` centroids; an empty cluster is re-seeded
at the point with the largest current error (points ranked per row, the ``e``-th empty cluster taking the
``e``-th worst point). Lloyd iterations stop when no assignment changes (an exact fixed point; no tolerance).
The best of ``n_init`` runs (lowest inertia) is returned per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradlab.core.validation import check_int, check_tensor, check_type

__all__ = ["KMeans1DResult", "kmeans_1d", "nearest_codeword"]


@dataclass(frozen=True)
class KMeans1DResult:
    """Result of :func:`kmeans_1d` for ``B`` independent rows.

    Attributes:
        centroids: ``(B, k)`` codewords, sorted ascending in each row.
        labels: ``(B, n)`` index of each point's nearest centroid.
        inertia: ``(B,)`` weighted sum of squared distances to the assigned centroid.
        n_iter: Lloyd iterations run (the maximum over rows and restarts).
    """

    centroids: torch.Tensor
    labels: torch.Tensor
    inertia: torch.Tensor
    n_iter: int


def nearest_codeword(values: torch.Tensor, sorted_codebooks: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword of each value: ``values`` ``(B, n)``, ``sorted_codebooks`` ``(B, k)`` ascending.

    Uses ``searchsorted`` against the midpoints of consecutive codewords (ties go to the lower codeword).
    """
    if sorted_codebooks.shape[-1] == 1:
        return torch.zeros(values.shape, dtype=torch.int64, device=values.device)
    mids = ((sorted_codebooks[..., 1:] + sorted_codebooks[..., :-1]) / 2).contiguous()
    return torch.searchsorted(mids, values.contiguous(), right=False)


def _kmeanspp(x: torch.Tensor, w: torch.Tensor, k: int, gen: torch.Generator | None) -> torch.Tensor:
    """Greedy k-means++: each new centroid is the best (lowest potential) of ``2 + ⌊ln k⌋`` candidates drawn with
    probability proportional to the weighted squared distance to the nearest chosen centroid."""
    rows = torch.arange(x.shape[0], device=x.device)
    trials = 2 + int(math.log(k))
    first = torch.multinomial(w, 1, generator=gen).squeeze(1)
    cents = [x[rows, first]]
    d2 = (x - cents[0][:, None]) ** 2
    for _ in range(1, k):  # loop over the k codewords, each step vectorised over rows, candidates and points
        p = d2 * w
        dead = p.sum(1) <= 0  # every weighted point already is a centroid: pick any weighted point
        p = torch.where(dead[:, None], w, p)
        cand = x[rows[:, None], torch.multinomial(p, trials, replacement=True, generator=gen)]  # (B, trials)
        new_d2 = torch.minimum(d2[:, None, :], (x[:, None, :] - cand[:, :, None]) ** 2)  # (B, trials, n)
        best = (new_d2 * w[:, None, :]).sum(2).argmin(1)
        cents.append(cand[rows, best])
        d2 = new_d2[rows, best]
    return torch.stack(cents, 1)


def kmeans_1d(
    values: torch.Tensor,
    k: int,
    *,
    sample_weight: torch.Tensor | None = None,
    n_init: int = 4,
    max_iter: int = 300,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> KMeans1DResult:
    """Weighted 1-D k-means on each row of ``values``.

    Args:
        values: ``(n,)`` or ``(B, n)`` finite floating-point tensor (``B`` independent problems).
        k: number of centroids, ``>= 1``.
        sample_weight: non-negative weights shaped like ``values`` (zero = padding); each row needs a positive
            total. Default: all ones.
        n_init: k-means++ restarts per row; the run with the lowest inertia is kept.
        max_iter: maximum Lloyd iterations.
        init: ``(k,)`` or ``(B, k)`` initial centroids (then ``n_init`` is ignored: one run per row).
        generator: ``torch.Generator`` on ``values``' device for the seeding draws.

    Returns:
        :class:`KMeans1DResult` (with a leading batch dimension of 1 when ``values`` is 1-D).
    """
    check_tensor("values", values, ndim=(1, 2), floating=True, finite=True)
    check_int("k", k, minimum=1)
    check_int("n_init", n_init, minimum=1)
    check_int("max_iter", max_iter, minimum=1)
    if generator is not None:
        check_type("generator", generator, torch.Generator)
    x = values[None] if values.ndim == 1 else values
    if x.shape[1] == 0:
        raise ValueError("values must hold at least one point per row; got 0 columns")
    if sample_weight is None:
        w = torch.ones_like(x)
    else:
        check_tensor("sample_weight", sample_weight, floating=True, finite=True)
        if sample_weight.shape != values.shape:
            raise ValueError(f"sample_weight must have the shape of values {tuple(values.shape)}; "
                             f"got {tuple(sample_weight.shape)}")
        w = (sample_weight[None] if sample_weight.ndim == 1 else sample_weight).to(x.dtype)
        if bool((w < 0).any()):
            raise ValueError("sample_weight must be non-negative")
        if bool((w.sum(1) <= 0).any()):
            raise ValueError("sample_weight must have a positive sum in every row")
    B, n = x.shape
    if init is not None:
        check_tensor("init", init, ndim=(1, 2), floating=True, finite=True)
        init = (init[None] if init.ndim == 1 else init).to(x.dtype)
        if init.shape != (B, k):
            raise ValueError(f"init must have shape ({k},) or ({B}, {k}); got {tuple(init.shape)}")
        n_init = 1
    xr = x.repeat_interleave(n_init, 0)  # (B·R, n), restarts of a row adjacent
    wr = w.repeat_interleave(n_init, 0)
    cents = (_kmeanspp(xr, wr, k, generator) if init is None else init.clone()).sort(1).values
    # Lloyd on sorted values: clusters are runs of the sorted row, so an iteration is k searchsorted lookups
    # and differences of prefix sums (float64), O(k log n) per row instead of O(n).
    xs, order = xr.sort(1)
    ws = torch.gather(wr, 1, order)
    zero = torch.zeros(xs.shape[0], 1, dtype=torch.float64, device=xs.device)
    cum_w = torch.cat([zero, ws.to(torch.float64).cumsum(1)], 1)
    cum_wx = torch.cat([zero, (ws.to(torch.float64) * xs.to(torch.float64)).cumsum(1)], 1)
    n_top = min(k, n)

    def boundaries(c: torch.Tensor) -> torch.Tensor:
        mids = ((c[:, 1:] + c[:, :-1]) / 2).contiguous()
        ends = torch.searchsorted(xs, mids, right=True)  # points <= mid_j belong to clusters 0..j
        full = torch.full((xs.shape[0], 1), n, dtype=ends.dtype, device=xs.device)
        return torch.cat([ends, full], 1)

    ends = boundaries(cents)
    it = 0
    for it in range(1, max_iter + 1):
        starts = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], 1)
        cnt = torch.gather(cum_w, 1, ends) - torch.gather(cum_w, 1, starts)
        sums = torch.gather(cum_wx, 1, ends) - torch.gather(cum_wx, 1, starts)
        empty = cnt <= 0
        new = (sums / cnt.clamp_min(torch.finfo(torch.float64).tiny)).to(xs.dtype)
        if bool(empty.any()):
            labels = nearest_codeword(xr, cents)
            err = wr * (xr - torch.gather(cents, 1, labels)) ** 2
            worst = torch.gather(xr, 1, torch.topk(err, n_top, dim=1).indices)  # (B·R, n_top)
            rank = (empty.cumsum(1) - 1).clamp(0, n_top - 1)
            new = torch.where(empty, torch.gather(worst, 1, rank), new)
        cents = new.sort(1).values
        new_ends = boundaries(cents)
        if torch.equal(new_ends, ends):
            break
        ends = new_ends
    labels = nearest_codeword(xr, cents)
    inertia = (wr * (xr - torch.gather(cents, 1, labels)) ** 2).sum(1).view(B, n_init)
    best = inertia.argmin(1) + torch.arange(B, device=x.device) * n_init
    return KMeans1DResult(centroids=cents[best], labels=labels[best], inertia=inertia.min(1).values, n_iter=it)
