"""Stochastic Lanczos quadrature (SLQ) spectral density and Hutchinson trace estimation.

**Hutchinson** (1989): for probes :math:`z` with :math:`E[z z^\\top] = I` (Rademacher or Gaussian),
:math:`E[z^\\top A z] = \\mathrm{tr}(A)`; the estimate averages ``num_probes`` samples and reports its standard error.

**SLQ** (Golub & Meurant; Ubaru, Chen & Saad 2017; used for neural-network Hessians by Ghorbani et al. 2019 and
Granziol et al.). The empirical spectral measure :math:`\\mu = \\frac1P \\sum_i \\delta_{\\lambda_i}` satisfies
:math:`\\int g\\, d\\mu = \\frac1P \\mathrm{tr}\\, g(A) = E_v[v^\\top g(A) v]` for a unit probe
:math:`v = z/\\|z\\|`. For each probe, :math:`m` Lanczos steps started at :math:`v` give Ritz values
:math:`\\theta_k` and weights :math:`\\tau_k = (e_1^\\top s_k)^2` with :math:`v^\\top g(A) v \\approx \\sum_k \\tau_k g(\\theta_k)`,
exact for polynomials of degree :math:`\\le 2m-1`. Averaging over probes gives the density estimate

.. math:: \\hat\\mu = \\frac{1}{n_v} \\sum_{l=1}^{n_v} \\sum_{k=1}^{m} \\tau^{(l)}_k\\, \\delta_{\\theta^{(l)}_k},

smoothed with a Gaussian kernel of width :math:`\\sigma` for plotting. Its moments estimate :math:`\\mathrm{tr}(A^j)/P`.
All probes run as one batched Lanczos (one ``matmat`` per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from gradlab.core import check_choice, check_int, check_positive
from gradlab.curvature.hvp import as_operator
from gradlab.curvature.lanczos import lanczos


def _probes(size: int, n: int, distribution: str, generator: torch.Generator | None, dtype, device) -> torch.Tensor:
    check_choice("distribution", distribution, ("rademacher", "gaussian"))
    if distribution == "rademacher":
        z = torch.randint(0, 2, (size, n), generator=generator).to(torch.float64) * 2 - 1
    else:
        z = torch.randn(size, n, generator=generator, dtype=torch.float64)
    return z.to(dtype=dtype, device=device)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate: ``mean`` of the samples :math:`z^\\top A z`, its standard error and the samples."""

    mean: float
    stderr: float
    samples: torch.Tensor


def hutchinson_trace(
    operator: Any,
    num_probes: int = 100,
    *,
    distribution: str = "rademacher",
    batch_size: int = 32,
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    """Hutchinson's unbiased estimate of :math:`\\mathrm{tr}(A)` from ``num_probes`` products (``batch_size`` at a time)."""
    op = as_operator(operator)
    n = check_int("num_probes", num_probes, minimum=1)
    bs = check_int("batch_size", batch_size, minimum=1)
    samples = []
    for start in range(0, n, bs):
        Z = _probes(op.size, min(bs, n - start), distribution, generator, op.dtype, op.device)
        samples.append((Z * op.matmat(Z)).sum(dim=0))
    s = torch.cat(samples)
    stderr = float(s.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.inf
    return TraceEstimate(float(s.mean()), stderr, s)


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ estimate of the spectral measure of a ``size x size`` symmetric operator.

    Attributes:
        nodes: Ritz values, ``(num_probes, m)``.
        weights: quadrature weights, ``(num_probes, m)``; each row sums to one.
        size: the dimension ``P``.
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    size: int

    def moment(self, k: int) -> float:
        """:math:`\\int \\lambda^k d\\hat\\mu`, an estimate of :math:`\\mathrm{tr}(A^k)/P`."""
        check_int("k", k, minimum=0)
        return float((self.weights * self.nodes**k).sum(dim=1).mean())

    def per_probe_moment(self, k: int) -> torch.Tensor:
        """:math:`\\sum_j \\tau_j \\theta_j^k` for each probe, equal to :math:`v^\\top A^k v` when ``k <= 2m - 1``."""
        check_int("k", k, minimum=0)
        return (self.weights * self.nodes**k).sum(dim=1)

    def trace(self) -> float:
        """SLQ estimate of :math:`\\mathrm{tr}(A) = P \\int \\lambda\\, d\\hat\\mu`."""
        return self.size * self.moment(1)

    def expectation(self, fn: Any) -> float:
        """:math:`\\int g\\, d\\hat\\mu` for an elementwise torch function ``g`` (e.g. ``torch.log`` for log-det / P)."""
        return float((self.weights * fn(self.nodes)).sum(dim=1).mean())

    @property
    def top(self) -> float:
        """The largest Ritz value over all probes (an estimate of :math:`\\lambda_{max}`)."""
        return float(self.nodes.max())

    @property
    def bottom(self) -> float:
        """The smallest Ritz value over all probes."""
        return float(self.nodes.min())

    def density(self, grid: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """Gaussian-smoothed density on ``grid`` (integrates to ~1); ``sigma`` defaults to 1% of the spectral range."""
        if not isinstance(grid, torch.Tensor) or grid.ndim != 1:
            raise ValueError("grid must be a 1-D tensor")
        if sigma is None:
            sigma = max(1e-2 * (self.top - self.bottom), 1e-12)
        check_positive("sigma", sigma)
        g = grid.to(self.nodes.dtype)[:, None, None]
        kern = torch.exp(-0.5 * ((g - self.nodes[None]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return (kern * self.weights[None]).sum(dim=2).mean(dim=1)


def slq_spectral_density(
    operator: Any,
    num_probes: int = 8,
    num_iters: int = 40,
    *,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature with ``num_probes`` probes and ``num_iters`` Lanczos steps each (batched)."""
    op = as_operator(operator)
    n = check_int("num_probes", num_probes, minimum=1)
    check_int("num_iters", num_iters, minimum=1)
    Z = _probes(op.size, n, distribution, generator, op.dtype, op.device)
    res = lanczos(op, num_iters, v0=Z, generator=generator)
    return SpectralDensity(res.ritz_values, res.ritz_weights, op.size)
