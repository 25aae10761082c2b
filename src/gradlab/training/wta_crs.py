r"""WTA-CRS: winner-take-all column-row sampling for memory-efficient linear layers (Liu et al., NeurIPS 2023,
arXiv 2305.15265).

A linear layer :math:`Y = X W^\top + b` with :math:`X \in \mathbb{R}^{N\times D}` (N = batch × tokens) needs X in
its backward pass only for the weight gradient :math:`\nabla_W = G^\top X = \sum_i g_i x_i^\top`. WTA-CRS stores
k ≪ N re-weighted rows of X and estimates that sum without bias:

* probabilities :math:`p_i = \lVert x_i\rVert\,\lVert g_i\rVert / \sum_j \lVert x_j\rVert\,\lVert g_j\rVert`;
* the :math:`|C|` rows of largest p are kept deterministically (weight 1), :math:`|C|` minimising
  :math:`(1 - \sum_{i\in\text{top-}c} p_i)/(k - c)` over :math:`c = 0, \dots, k-1` (c = 0 is plain CRS);
* the other :math:`k - |C|` rows are drawn i.i.d. with replacement from p with C zeroed, each with weight
  :math:`(1 - \sum_{i\in C} p_i) / ((k - |C|)\, p_j)`:

.. math::

    \widehat{G^\top X} = \sum_{i\in C} g_i x_i^\top
        + \frac{1 - \sum_{C} p}{k - |C|} \sum_{s=1}^{k-|C|} \frac{g_{j_s} x_{j_s}^\top}{p_{j_s}},
    \qquad \mathbb{E}\,\widehat{G^\top X} = G^\top X .

CRS (draw all k rows from p, weight :math:`1/(k p_j)`) and uniform sampling (weight N/k) are the baselines.

:class:`WTACRSLinear` computes the forward pass exactly and saves only the k selected, already re-weighted rows
of X and their indices; the input and bias gradients are exact (they need no X). Differences from the official
code, as the library's design asks:

* g is unknown in the forward pass, when rows must be chosen. The official code caches per-example, per-token
  gradient norms keyed by dataset index; here each layer keeps the row norms :math:`\lVert g_i\rVert` of its
  previous backward pass (same row positions) and uses activation norms alone until a matching cache exists.
  A row whose cached norm is 0 gets the floor ``1e-3 × mean`` cached norm (not in the paper) so that every row
  with :math:`x_i \ne 0` can still be drawn and the estimator stays unbiased.
* k = max(⌈keep·N⌉, 10) (the official ``minimal_k``); when k ≥ N the layer is exact, so ``keep = 1`` is
  ``nn.Linear`` bit for bit.
* computations stay in the input dtype (float32 on CPU), not the official fp16 cast; probabilities in float64.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from gradlab.core.validation import check_choice, check_int, check_range, check_tensor, check_type

__all__ = [
    "WTACRSLinear",
    "convert_linear",
    "crs_sample",
    "deterministic_count",
    "estimate_gtx",
    "sample_count",
    "wta_crs_sample",
]

MIN_K = 10
"""The smallest number of rows kept (the official ``minimal_k``)."""

GNORM_FLOOR = 1e-3
"""Cached gradient norms are floored at this fraction of their mean (keeps every row reachable; not in the paper)."""


def sample_count(keep: float, n: int, min_k: int = MIN_K) -> int:
    """k = min(N, max(⌈keep·N⌉, min_k)): the number of rows of an N-row input that WTA-CRS keeps."""
    keep = check_range("keep", keep, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
    n = check_int("n", n, minimum=0)
    min_k = check_int("min_k", min_k, minimum=1)
    return min(n, max(math.ceil(round(keep * n, 9)), min_k))


def _check_probs(probs: torch.Tensor) -> torch.Tensor:
    check_tensor("probs", probs, ndim=1, floating=True, finite=True)
    if probs.numel() == 0:
        raise ValueError("probs must hold at least one entry")
    if bool((probs < 0).any()):
        raise ValueError("probs must be non-negative")
    total = probs.sum()
    if not float(total) > 0:
        raise ValueError("probs must have a positive sum")
    return probs.to(torch.float64) / total.to(torch.float64)


def deterministic_count(probs: torch.Tensor, k: int) -> int:
    r""":math:`|C|`: the c in {0, ..., k−1} minimising :math:`(1 - \sum_{\text{top-}c} p)/(k - c)` (smallest c on ties).

    ``probs`` need not be normalised; ``k`` must not exceed ``len(probs)``.
    """
    p = _check_probs(probs)
    k = check_int("k", k, minimum=1, maximum=p.numel())
    return _deterministic_count(torch.topk(p, k).values, k)


def _deterministic_count(top: torch.Tensor, k: int) -> int:
    mass = torch.cat([top.new_zeros(1), torch.cumsum(top[: k - 1], 0)])  # mass of the top-c rows, c = 0..k-1
    rest = (1.0 - mass).clamp_min(0.0)
    score = rest / torch.arange(k, 0, -1, dtype=top.dtype, device=top.device)
    return int(torch.argmin(score))  # argmin returns the first minimum


def _sample(p: torch.Tensor, k: int, c: int, top_idx: torch.Tensor | None,
            generator: torch.Generator | None, draws: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``draws`` independent selections as (draws × k') indices and weights: rows ``top_idx[:c]`` with weight 1
    plus k−c draws from p restricted to the rest, weighted by the residual mass."""
    if c > 0:
        det = top_idx[:c]
        rest = p.clone()
        rest[det] = 0.0
        mass = rest.sum()
    else:
        det, rest, mass = p.new_zeros(0, dtype=torch.long), p, p.sum()
    det = det.unsqueeze(0).expand(draws, c)
    ones = torch.ones(draws, c, dtype=p.dtype, device=p.device)
    if not float(mass) > 0:  # the deterministic rows carry all the mass: exact
        return det, ones
    picks = torch.multinomial(rest, draws * (k - c), replacement=True, generator=generator).view(draws, k - c)
    weights = mass / ((k - c) * rest[picks])
    return torch.cat([det, picks], 1), torch.cat([ones, weights], 1)


def wta_crs_sample(probs: torch.Tensor, k: int, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    r"""Draw WTA-CRS row indices and weights for row probabilities ``probs`` (normalised inside).

    Returns ``(indices, weights, c)``: the first ``c = |C|`` indices are the top-c rows with weight 1; the rest
    are k−c draws with replacement from p with C zeroed, weight :math:`(1-\sum_C p)/((k-c) p_j)` (float64). Then
    :math:`\sum_s w_s\, g_{i_s} x_{i_s}^\top` is an unbiased estimate of :math:`G^\top X`. If the top-c rows
    carry all the mass only those c rows are returned (the estimate is exact).
    """
    p = _check_probs(probs)
    k = check_int("k", k, minimum=1, maximum=p.numel())
    _check_generator(generator)
    top = torch.topk(p, k)
    c = _deterministic_count(top.values, k)
    idx, w = _sample(p, k, c, top.indices, generator)
    return idx[0], w[0], c


def crs_sample(probs: torch.Tensor, k: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Plain column-row sampling: k draws with replacement from p, weights :math:`1/(k p_j)` (float64).

    With uniform ``probs`` this is uniform sampling with weights N/k.
    """
    p = _check_probs(probs)
    k = check_int("k", k, minimum=1)
    _check_generator(generator)
    idx, w = _sample(p, k, 0, None, generator)
    return idx[0], w[0]


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None:
        check_type("generator", generator, torch.Generator)


def _row_norm_probs(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.to(torch.float64), dim=1) * torch.linalg.vector_norm(g.to(torch.float64), dim=1)


def estimate_gtx(g: torch.Tensor, x: torch.Tensor, k: int, method: str = "wta-crs",
                 generator: torch.Generator | None = None, draws: int | None = None) -> torch.Tensor:
    r"""A random estimate of :math:`G^\top X` (m×D) from k of the N rows of ``g`` (N×m) and ``x`` (N×D).

    ``method``: ``"wta-crs"`` (the paper's estimator), ``"crs"`` (k draws from
    :math:`p_i \propto \lVert x_i\rVert\lVert g_i\rVert`, weights :math:`1/(k p_j)`) or ``"uniform"`` (k uniform
    draws, weight N/k). Exact row norms are used (the estimator of the paper's analysis, Sec. 3). With ``draws``
    = M, returns M independent estimates stacked (M×m×D). If every :math:`\lVert x_i\rVert\lVert g_i\rVert`
    is 0 the product is 0 and so is the estimate.
    """
    check_tensor("g", g, ndim=2, floating=True, finite=True)
    check_tensor("x", x, ndim=2, floating=True, finite=True)
    if g.shape[0] != x.shape[0]:
        raise ValueError(f"g and x must have the same number of rows; got {g.shape[0]} and {x.shape[0]}")
    method = check_choice("method", method, ("wta-crs", "crs", "uniform"))
    k = check_int("k", k, minimum=1)
    if x.shape[0] == 0:
        raise ValueError("g and x must have at least one row")
    if method == "wta-crs" and k > x.shape[0]:
        raise ValueError(f"k must be <= the number of rows ({x.shape[0]}) for wta-crs; got {k}")
    m_draws = 1 if draws is None else check_int("draws", draws, minimum=1)
    _check_generator(generator)
    dtype = torch.promote_types(g.dtype, x.dtype)
    if method == "uniform":
        p = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64, device=x.device)
    else:
        p = _row_norm_probs(g, x)
        total = p.sum()
        if not float(total) > 0:
            out = torch.zeros(m_draws, g.shape[1], x.shape[1], dtype=dtype, device=x.device)
            return out if draws is not None else out[0]
        p = p / total
    if method == "wta-crs":
        top = torch.topk(p, k)
        idx, w = _sample(p, k, _deterministic_count(top.values, k), top.indices, generator, m_draws)
    else:
        idx, w = _sample(p, k, 0, None, generator, m_draws)
    xs = x.to(dtype)[idx] * w.to(dtype).unsqueeze(-1)  # M×k×D
    out = g.to(dtype)[idx].transpose(1, 2) @ xs  # M×m×D
    return out if draws is not None else out[0]


class _GradNormCache:
    """The row norms of the output gradient from a layer's previous backward pass."""

    __slots__ = ("norms",)

    def __init__(self) -> None:
        self.norms: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> "_GradNormCache":
        new = _GradNormCache()
        new.norms = None if self.norms is None else self.norms.clone()
        return new


def _layer_probs(x2: torch.Tensor, cache: _GradNormCache) -> torch.Tensor:
    p = torch.linalg.vector_norm(x2.detach(), dim=1).to(torch.float64)
    gn = cache.norms
    if gn is not None and gn.shape[0] == p.shape[0] and gn.device == p.device:
        mean = gn.mean()
        if float(mean) > 0:
            p = p * gn.clamp_min(GNORM_FLOOR * mean)
    total = p.sum()
    if not torch.isfinite(total):
        raise ValueError("the input of WTACRSLinear contains NaN or inf (or its row norms overflow)")
    if not float(total) > 0:  # all-zero input rows: any rows do (the weight gradient is 0)
        return torch.full_like(p, 1.0 / p.numel())
    return p / total


class _WTACRSLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, k: int,
                cache: _GradNormCache, generator: torch.Generator | None) -> torch.Tensor:
        out = F.linear(x, weight, bias)
        x2 = x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[1]:
            p = _layer_probs(x2, cache)
            top = torch.topk(p, k)
            idx, w = _sample(p, k, _deterministic_count(top.values, k), top.indices, generator)
            idx, w = idx[0], w[0]
            x_sel = x2.index_select(0, idx) * w.to(x2.dtype).unsqueeze(1)
        else:  # frozen weight: nothing of X is needed
            idx, x_sel = x2.new_zeros(0, dtype=torch.long), x2.new_zeros(0, x2.shape[1])
        ctx.save_for_backward(x_sel, idx, weight)
        ctx.has_bias = bias is not None
        ctx.cache = cache
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x_sel, idx, weight = ctx.saved_tensors
        g2 = grad_out.reshape(-1, weight.shape[0])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = grad_out @ weight
        if ctx.needs_input_grad[1]:
            gw = g2.index_select(0, idx).T @ x_sel
            ctx.cache.norms = torch.linalg.vector_norm(g2, dim=1).to(torch.float64)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb, None, None, None


class WTACRSLinear(nn.Linear):
    r"""Drop-in ``nn.Linear`` whose backward pass estimates the weight gradient by WTA-CRS from k of N rows
    (arXiv 2305.15265, Alg. 1), saving only those k re-weighted rows of the input.

    Args:
        in_features, out_features, bias, device, dtype: as for ``nn.Linear``.
        keep: fraction of rows kept, in (0, 1]; k = max(⌈keep·N⌉, 10) for an input of N rows (all leading
            dimensions flattened). ``keep = 1`` (or k ≥ N) is exactly ``nn.Linear``.
        generator: optional ``torch.Generator`` (on the layer's device) for the row draws.

    The forward output, input gradient and bias gradient are exact. Row probabilities use the gradient row
    norms of the layer's previous backward pass when its N matches (activation norms alone otherwise).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 keep: float = 0.3, generator: torch.Generator | None = None) -> None:
        keep = check_range("keep", keep, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        _check_generator(generator)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.keep = keep
        self.generator = generator
        self._grad_norms = _GradNormCache()

    @classmethod
    def from_linear(cls, linear: nn.Linear, keep: float = 0.3,
                    generator: torch.Generator | None = None) -> "WTACRSLinear":
        """A ``WTACRSLinear`` that shares ``linear``'s weight and bias Parameters (the same objects)."""
        check_type("linear", linear, nn.Linear)
        keep = check_range("keep", keep, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        if isinstance(linear.weight, nn.parameter.UninitializedParameter):
            raise ValueError("linear has uninitialised (lazy) parameters; run one forward pass first")
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta",
                  keep=keep, generator=generator)
        new.weight = linear.weight
        new.register_parameter("bias", linear.bias)
        new.train(linear.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0:
            raise ValueError("x must have at least one dimension")
        n = x.numel() // x.shape[-1] if x.shape[-1] else 0
        needs_grad = torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad
                                                  or (self.bias is not None and self.bias.requires_grad))
        k = sample_count(self.keep, n) if n else 0
        if not needs_grad or k >= n:
            return F.linear(x, self.weight, self.bias)
        return _WTACRSLinearFn.apply(x, self.weight, self.bias, k, self._grad_norms, self.generator)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keep={self.keep}"


IncludeSpec = None | str | Iterable[str] | Callable[[str, nn.Module], bool]


def convert_linear(model: nn.Module, keep: float, include: IncludeSpec = None,
                   generator: torch.Generator | None = None) -> nn.Module:
    """Replace ``nn.Linear`` submodules of ``model`` in place by :class:`WTACRSLinear` sharing their Parameters.

    Args:
        model: the module to convert (a bare ``nn.Linear`` is returned converted, since it cannot be replaced in
            place).
        keep: fraction of rows kept, in (0, 1].
        include: which layers: ``None`` (every ``nn.Linear``), a glob pattern or list of glob patterns matched
            against qualified module names (``"blocks.*.ffn.*"``), or a callable ``(name, module) -> bool``.
            A pattern that matches no ``nn.Linear`` raises ``ValueError`` (typos do not pass silently).
        generator: optional ``torch.Generator`` shared by the converted layers.

    Only modules whose type is exactly ``nn.Linear`` are converted (subclasses may have their own forward, and
    e.g. ``nn.MultiheadAttention`` bypasses its ``out_proj``'s forward). Hooks on the old modules are not
    carried over. Everything is validated before the model is changed. Returns ``model``.
    """
    check_type("model", model, nn.Module)
    keep = check_range("keep", keep, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
    _check_generator(generator)
    linears = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    if include is None:
        chosen = linears
    elif callable(include):
        chosen = [(n, m) for n, m in linears if include(n, m)]
    else:
        patterns = [include] if isinstance(include, str) else list(include) if isinstance(include, Iterable) else None
        if patterns is None or not all(isinstance(p, str) for p in patterns):
            raise TypeError("include must be None, a glob pattern, a list of glob patterns or a callable "
                            f"(name, module) -> bool; got {include!r}")
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n, _ in linears)]
        if unmatched:
            raise ValueError(f"include pattern(s) {unmatched} match no nn.Linear; linear layers are "
                             f"{[n for n, _ in linears]}")
        chosen = [(n, m) for n, m in linears if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    for _, m in chosen:
        if isinstance(m.weight, nn.parameter.UninitializedParameter):
            raise ValueError("model has uninitialised (lazy) linear layers; run one forward pass first")
    replacements = [(name, WTACRSLinear.from_linear(m, keep, generator)) for name, m in chosen]
    for name, new in replacements:
        if name == "":
            return new
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model
