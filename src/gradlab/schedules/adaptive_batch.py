"""Adaptive batch sizes from adaptive-sampling tests (AdAdaGrad).

Lau, Liu & Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods" (arXiv 2402.11215),
using the norm test of Byrd et al. (2012) and the augmented inner-product test of Bollapragada et al. (2018).
With per-sample gradients ``G_i`` (``i`` in the batch ``B_k`` of size ``b_k``), ``g = mean_i G_i`` and sample
variances ``Var`` with Bessel's correction, the tests ask for the batch size ``b`` such that

* norm test:            ``tr Var_i(G_i) / b <= eta^2 ||g||^2``            ->  ``b = tr Var(G) / (eta^2 ||g||^2)``
* inner-product test:   ``Var_i(<G_i, g>) / b <= theta^2 ||g||^4``         ->  ``b = Var(<G, g>) / (theta^2 ||g||^4)``
* orthogonality test:   ``tr Var_i(G_i - <G_i,g> g/||g||^2) / b <= nu^2 ||g||^2``
* augmented inner-product test: the max of the inner-product and orthogonality batch sizes,

and the next batch size is ``b_{k+1} = min(b_max, max(b_k, ceil(b)))`` (never decreasing). The inner product is
taken over the *whole* parameter vector (not per tensor, as the official code does).

Coordinate-wise variants (our formulation, for the coordinate-wise AdaGrad): each test is applied to every
coordinate ``j`` separately, ``b_j = Var_i(G_ij) / (c^2 g_j^2)`` (``c = eta`` for the norm test, ``theta`` for the
(augmented) inner-product test; for one coordinate the inner-product test reduces to the norm test and the
orthogonal part vanishes), and the requirement is the ``coordinate_quantile`` of the ``b_j`` (``1.0`` = every
coordinate must pass, ``0.5`` = the median coordinate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from gradlab.core.validation import check_choice, check_int, check_positive, check_range, check_type
from gradlab.schedules.per_sample import flatten_per_sample, per_sample_grads

__all__ = ["TESTS", "AdaptiveBatchSize", "BatchTestResult", "batch_test_statistics"]

TESTS = ("norm", "inner_product", "augmented_inner_product")


@dataclass(frozen=True)
class BatchTestResult:
    """One evaluation of a test: the batch size it asks for (unrounded, uncapped) and its statistics."""

    required: float
    statistics: dict[str, float] = field(default_factory=dict)


def batch_test_statistics(
    per_sample: torch.Tensor | dict[str, torch.Tensor] | list[torch.Tensor],
    test: str = "norm",
    *,
    eta: float = 0.1,
    theta: float = 0.1,
    nu: float = 1.0,
    coordinatewise: bool = False,
    coordinate_quantile: float = 0.5,
    tiny: float = 1e-30,
) -> BatchTestResult:
    """Evaluate a batch-size test on per-sample gradients (``(b, D)`` or blocks ``(b, ...)``, ``b >= 2``).

    Returns the batch size the test requires (``inf`` when the mean gradient is zero) and the statistics:
    ``grad_norm_sq``, ``variance_trace`` (norm test), ``inner_product_variance``, ``orthogonal_variance_trace``.
    """
    check_choice("test", test, TESTS)
    check_positive("eta", eta)
    check_positive("theta", theta)
    check_positive("nu", nu)
    check_range("coordinate_quantile", coordinate_quantile, 0.0, 1.0, high_inclusive=True)
    G = flatten_per_sample(per_sample)
    if not G.is_floating_point():
        raise TypeError(f"per-sample gradients must be floating point; got {G.dtype}")
    b = G.shape[0]
    if b < 2:
        raise ValueError(f"the tests need at least 2 per-sample gradients (sample variance); got {b}")
    if not torch.isfinite(G).all():
        raise ValueError("per-sample gradients contain NaN or inf")
    g = G.mean(dim=0)
    gnorm2 = float(g.square().sum())
    stats: dict[str, float] = {"grad_norm_sq": gnorm2, "num_samples": float(b)}
    if coordinatewise:
        var = G.var(dim=0, correction=1)
        c = eta if test == "norm" else theta
        ratio = var / (c**2 * g.square())
        ratio = torch.where(var == 0, torch.zeros_like(ratio), ratio)  # 0/0: a noiseless coordinate passes
        required = _quantile(ratio.double(), coordinate_quantile)
        stats["variance_trace"] = float(var.sum())
        return BatchTestResult(required, stats)
    if test == "norm":
        var_trace = float(G.var(dim=0, correction=1).sum())
        stats["variance_trace"] = var_trace
        return BatchTestResult(_ratio(var_trace, eta**2 * gnorm2, tiny), stats)
    ips = G @ g
    var_ip = float(ips.var(correction=1))
    stats["inner_product_variance"] = var_ip
    required = _ratio(var_ip, theta**2 * gnorm2**2, tiny)
    if test == "augmented_inner_product":
        if gnorm2 > tiny:
            orth = G - torch.outer(ips / gnorm2, g)
            var_orth = float(orth.var(dim=0, correction=1).sum())
        else:
            var_orth = float(G.var(dim=0, correction=1).sum())
        stats["orthogonal_variance_trace"] = var_orth
        required = max(required, _ratio(var_orth, nu**2 * gnorm2, tiny))
    return BatchTestResult(required, stats)


def _quantile(values: torch.Tensor, q: float) -> float:
    """numpy's default (linear) quantile via ``kthvalue``, which, unlike ``torch.quantile``, has no size limit."""
    n = values.numel()
    pos = q * (n - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    v_lo = float(values.kthvalue(lo + 1).values)
    v_hi = float(values.kthvalue(hi + 1).values) if hi != lo else v_lo
    if math.isinf(v_lo) or math.isinf(v_hi):
        return v_hi if pos > lo else v_lo
    return v_lo + (pos - lo) * (v_hi - v_lo)


def _ratio(num: float, den: float, tiny: float) -> float:
    if num == 0.0:
        return 0.0
    return num / den if den > tiny else math.inf


class AdaptiveBatchSize:
    """A batch-size policy that grows the batch when a sampling test says the gradient is too noisy.

    Call :meth:`update` with per-sample gradients of the current batch (or :meth:`update_from_model`, which
    computes them with ``torch.func.vmap(grad)`` on at most ``max_test_samples`` samples) after each optimizer
    step; the test runs every ``test_interval`` calls and ``batch_size`` becomes
    ``min(max_batch_size, max(batch_size, ceil(required)))``.

    Args:
        initial_batch_size: ``b_0`` (>= 2, the tests need a sample variance).
        max_batch_size: the cap ``b_max`` (>= ``b_0``).
        test: ``"norm"``, ``"inner_product"`` or ``"augmented_inner_product"``.
        eta, theta, nu: the tests' constants (> 0); larger means more noise tolerated, slower growth.
        coordinatewise: apply the test per coordinate (see module docstring).
        coordinate_quantile: which quantile of the per-coordinate requirements is used, in [0, 1].
        test_interval: run the test every this many calls of :meth:`update`.
        max_test_samples: cap on the per-sample gradients used by :meth:`update_from_model`.
    """

    def __init__(
        self,
        initial_batch_size: int,
        max_batch_size: int,
        test: str = "norm",
        *,
        eta: float = 0.1,
        theta: float = 0.1,
        nu: float = 1.0,
        coordinatewise: bool = False,
        coordinate_quantile: float = 0.5,
        test_interval: int = 1,
        max_test_samples: int | None = None,
    ) -> None:
        self.initial_batch_size = check_int("initial_batch_size", initial_batch_size, minimum=2)
        self.max_batch_size = check_int("max_batch_size", max_batch_size, minimum=self.initial_batch_size)
        self.test = check_choice("test", test, TESTS)
        self.eta = check_positive("eta", eta)
        self.theta = check_positive("theta", theta)
        self.nu = check_positive("nu", nu)
        self.coordinatewise = check_type("coordinatewise", coordinatewise, bool)
        self.coordinate_quantile = check_range("coordinate_quantile", coordinate_quantile, 0.0, 1.0,
                                               high_inclusive=True)
        self.test_interval = check_int("test_interval", test_interval, minimum=1)
        self.max_test_samples = None if max_test_samples is None else check_int("max_test_samples",
                                                                               max_test_samples, minimum=2)
        self.batch_size = self.initial_batch_size
        self.num_updates = 0
        self.history: list[int] = [self.batch_size]
        self.last_result: BatchTestResult | None = None

    def evaluate(self, per_sample: torch.Tensor | dict[str, torch.Tensor] | list[torch.Tensor]) -> BatchTestResult:
        """The test's requirement for these per-sample gradients (does not change the batch size)."""
        return batch_test_statistics(per_sample, self.test, eta=self.eta, theta=self.theta, nu=self.nu,
                                     coordinatewise=self.coordinatewise,
                                     coordinate_quantile=self.coordinate_quantile)

    def update(self, per_sample: torch.Tensor | dict[str, torch.Tensor] | list[torch.Tensor]) -> int:
        """Record one optimizer step; run the test when due; return the (possibly larger) batch size.

        The test runs before any counter moves, so a bad ``per_sample`` (wrong type, NaN/inf) raises and leaves
        the schedule exactly as it was.
        """
        due = (self.num_updates + 1) % self.test_interval == 0 and self.batch_size < self.max_batch_size
        if due:
            result = self.evaluate(per_sample)
        else:
            result = None
            G = flatten_per_sample(per_sample)
            if not torch.isfinite(G).all():
                raise ValueError("per_sample gradients contain NaN or inf")
        self.num_updates += 1
        if result is not None:
            self.last_result = result
            required = result.required
            new = self.max_batch_size if math.isinf(required) else min(self.max_batch_size, math.ceil(required))
            self.batch_size = max(self.batch_size, new)
        self.history.append(self.batch_size)
        return self.batch_size

    def update_from_model(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        **per_sample_kwargs: Any,
    ) -> int:
        """Like :meth:`update`, computing per-sample gradients of ``model`` on (a prefix of) the batch."""
        due = (self.num_updates + 1) % self.test_interval == 0 and self.batch_size < self.max_batch_size
        if not due:
            self.num_updates += 1
            self.history.append(self.batch_size)
            return self.batch_size
        if self.max_test_samples is not None:
            inputs, targets = inputs[: self.max_test_samples], targets[: self.max_test_samples]
        return self.update(per_sample_grads(model, loss_fn, inputs, targets, **per_sample_kwargs))

    def state_dict(self) -> dict[str, Any]:
        """The mutable state (batch size, counters, history)."""
        return {"batch_size": self.batch_size, "num_updates": self.num_updates, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (validated as a whole before anything changes)."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from AdaptiveBatchSize.state_dict(); got {type(state).__name__}")
        missing = [k for k in ("batch_size", "num_updates", "history") if k not in state]
        if missing:
            raise ValueError(f"state is missing {missing}; expected the output of AdaptiveBatchSize.state_dict()")
        batch_size = check_int("state['batch_size']", state["batch_size"], minimum=2, maximum=self.max_batch_size)
        num_updates = check_int("state['num_updates']", state["num_updates"], minimum=0)
        history = state["history"]
        if not isinstance(history, (list, tuple)):
            raise TypeError(f"state['history'] must be a list of batch sizes; got {type(history).__name__}")
        history = [check_int("state['history'][i]", b, minimum=1) for b in history]
        self.batch_size, self.num_updates, self.history = batch_size, num_updates, history

    def __repr__(self) -> str:
        kind = "coordinatewise " if self.coordinatewise else ""
        return (f"AdaptiveBatchSize({kind}{self.test}, batch_size={self.batch_size}, "
                f"max_batch_size={self.max_batch_size})")
