"""Grouping of similarly distributed neurons (JLCM, arXiv 2309.17361, first ingredient).

JLCM re-orders a layer's output neurons so that neurons whose weights are distributed alike sit in the same
contiguous group, and gives each group its own codebook (or scale). The paper does not publish its grouping
algorithm; ours is:

1. **signature** of neuron ``r``: the quantiles :math:`q_r = (Q_{r}(p_1), …, Q_{r}(p_{11}))` of its weights at
   :math:`p = 0.02, 0.116, …, 0.98` (linear interpolation between order statistics, like ``torch.quantile``);
2. the signatures are standardised per quantile level and projected on their first principal component
   :math:`u_1` (the direction in which the neurons' distributions differ most: for trained layers mostly their
   spread); the sign is fixed so the projection grows with the neuron's standard deviation;
3. neurons are sorted by :math:`\\langle q_r, u_1\\rangle` and cut into ``G`` contiguous groups of equal size
   (:func:`gradlab.compression.storage.group_sizes`), so the boundaries need no storage.

Equal-size groups are our choice: they make the storage exactly ``b + 16·G·2^b/|W|`` bits per weight; a
clustering with unequal groups would add ``G`` boundaries.
"""

from __future__ import annotations

import torch

from gradlab.core.validation import check_int, check_tensor

__all__ = ["neuron_order", "row_signatures"]


def row_signatures(weight: torch.Tensor, n_quantiles: int = 11) -> torch.Tensor:
    """``(R, n_quantiles)`` quantiles of each row of ``weight`` (rows = dim 0, the rest flattened) at
    ``linspace(0.02, 0.98, n_quantiles)``, by linear interpolation between sorted values."""
    check_tensor("weight", weight, floating=True, finite=True)
    check_int("n_quantiles", n_quantiles, minimum=1)
    if weight.ndim < 1 or weight.numel() == 0:
        raise ValueError(f"weight must be a non-empty tensor; got shape {tuple(weight.shape)}")
    rows = weight.reshape(weight.shape[0], -1).sort(1).values
    m = rows.shape[1]
    levels = torch.linspace(0.02, 0.98, n_quantiles, dtype=rows.dtype, device=rows.device) if n_quantiles > 1 \
        else torch.full((1,), 0.5, dtype=rows.dtype, device=rows.device)
    pos = levels * (m - 1)
    lo = pos.floor().long().clamp(0, m - 1)
    hi = (lo + 1).clamp(max=m - 1)
    frac = pos - lo.to(rows.dtype)
    return rows[:, lo] * (1 - frac) + rows[:, hi] * frac


def neuron_order(weight: torch.Tensor, n_quantiles: int = 11) -> torch.Tensor:
    """Permutation of the rows of ``weight`` that puts similarly distributed neurons next to each other.

    Returns an ``int64`` tensor ``perm`` with ``weight[perm]`` the re-ordered rows (see the module docstring).
    Deterministic: a stable sort, ties keep the original order.
    """
    sig = row_signatures(weight, n_quantiles).to(torch.float64)
    r = sig.shape[0]
    if r == 1:
        return torch.zeros(1, dtype=torch.int64, device=weight.device)
    z = sig - sig.mean(0)
    std = z.std(0)
    z = z / torch.where(std > 0, std, torch.ones_like(std))
    if not bool((z != 0).any()):
        return torch.arange(r, device=weight.device)
    _, _, vh = torch.linalg.svd(z, full_matrices=False)
    proj = z @ vh[0]
    spread = weight.reshape(r, -1).to(torch.float64).std(1) if weight[0].numel() > 1 else sig[:, 0]
    if float(((proj - proj.mean()) * (spread - spread.mean())).sum()) < 0:
        proj = -proj
    return torch.sort(proj, stable=True).indices
