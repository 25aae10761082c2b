"""Probes that compare what a model computes in context with reference learners.

Following Fu et al. (2023) and von Oswald et al. (2023):

* :class:`RidgeProbe` -- a closed-form ridge readout ``y ~ h^T a + c`` fitted on hidden states (one per layer,
  batched over a leading layer axis); a cheap, deterministic stand-in for retraining the model's readout.
* :func:`prediction_similarity` -- cosine similarity over positions (averaged over prompts) or mean squared
  difference between two prediction (or residual) tensors ``(..., B, T)``.
* :func:`similarity_matrix`, :func:`best_match` -- the layer x iteration heatmap of residual similarities
  ``r = yhat - y`` and the best-matching reference iteration per layer.
* :func:`matrix_correlation`, :func:`compare_weights` -- weight-space comparison
  ``<A, B> / (||A||_F ||B||_F)`` and the best scale ``<A, B> / ||B||^2`` per named matrix.
* :func:`sensitivity_cosine` -- cosine between the input gradients ``d yhat / d x_q`` of two predictors (the
  implied linear models; von Oswald et al.'s "model cos").
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from gradlab.core import check_choice, check_positive, check_type
from gradlab.incontext._validation import check_callable, check_data, check_shape

__all__ = [
    "RidgeProbe", "prediction_similarity", "similarity_matrix", "best_match", "matrix_correlation",
    "compare_weights", "sensitivity_cosine",
]


class RidgeProbe:
    """Closed-form ridge readout with bias (penalty ``lam * M * ||a||^2`` over ``M`` samples, bias unpenalised),
    fitted independently for every leading index (layer).

    ``fit(hidden, targets)``: ``hidden (L, M, H)`` (or ``(M, H)``), ``targets (M,)``; ``predict(hidden)`` returns
    ``(L, M)`` (or ``(M,)``). Any extra axes between ``L`` and ``H`` (prompts, positions) are flattened.
    """

    def __init__(self, lam: float = 1e-3) -> None:
        self.lam = check_positive("lam", lam, allow_zero=True)
        self.coef_: torch.Tensor | None = None

    @staticmethod
    def _design(h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, torch.ones_like(h[..., :1])], -1)

    def fit(self, hidden: torch.Tensor, targets: torch.Tensor) -> "RidgeProbe":
        check_data("hidden", hidden)
        check_data("targets", targets)
        if hidden.ndim < 2 or targets.ndim < 1:
            raise ValueError(f"hidden must be (L, M, H) or (M, H) and targets (M,); got {tuple(hidden.shape)} and "
                             f"{tuple(targets.shape)}")
        if targets.numel() == 0:
            raise ValueError("targets must hold at least one sample; got an empty tensor")
        single = hidden.ndim == targets.ndim + 1 and hidden.shape[:-1] == targets.shape
        h = hidden[None] if single else hidden
        if h.shape[1:-1] != targets.shape:
            raise ValueError(f"hidden must be (L, *targets.shape, H); got {tuple(hidden.shape)} and targets "
                             f"{tuple(targets.shape)}")
        x = self._design(h.reshape(h.shape[0], -1, h.shape[-1]).double())
        y = targets.reshape(-1).double()
        reg = self.lam * x.shape[1] * torch.eye(x.shape[-1], dtype=torch.float64)
        reg[-1, -1] = 0.0
        try:
            self.coef_ = torch.linalg.solve(x.mT @ x + reg, (x.mT @ y)[..., None]).squeeze(-1)
        except torch.linalg.LinAlgError:
            raise ValueError(f"hidden has rank-deficient features ({x.shape[1]} samples, {x.shape[-1] - 1} features) "
                             f"and lam={self.lam}: the ridge system is singular; use lam > 0") from None
        self._single = single
        return self

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.coef_ is None:
            raise RuntimeError("RidgeProbe.predict called before fit")
        check_data("hidden", hidden)
        h = hidden[None] if self._single else hidden
        if h.ndim < 2 or h.shape[0] != self.coef_.shape[0] or h.shape[-1] + 1 != self.coef_.shape[-1]:
            raise ValueError(f"hidden must be ({self.coef_.shape[0]}, ..., {self.coef_.shape[-1] - 1}) as in fit; "
                             f"got {tuple(hidden.shape)}")
        out = torch.einsum("l...h,lh->l...", self._design(h.double()), self.coef_).to(hidden.dtype)
        return out[0] if self._single else out


def prediction_similarity(a: torch.Tensor, b: torch.Tensor, metric: str = "cosine", eps: float = 1e-12
                          ) -> torch.Tensor:
    """Similarity of predictions ``a, b`` of shape ``(..., B, T)``: cosine over ``T`` averaged over ``B``
    (``metric="cosine"``) or the mean squared difference over ``B, T`` (``metric="mse"``). Returns ``(...)``."""
    check_choice("metric", metric, ("cosine", "mse"))
    check_data("a", a)
    check_data("b", b)
    eps = check_positive("eps", eps)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"a and b need at least 2 dims (B, T); got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"a and b must agree in their last two dims (B, T); got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"the leading dims of a {tuple(a.shape[:-2])} and b {tuple(b.shape[:-2])} do not "
                         f"broadcast") from None
    a, b = torch.broadcast_tensors(a, b)
    if metric == "mse":
        return (a - b).pow(2).mean((-1, -2))
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return (num / den.clamp_min(eps)).mean(-1)


def similarity_matrix(model_preds: torch.Tensor, reference_preds: torch.Tensor, targets: torch.Tensor | None = None,
                      metric: str = "cosine") -> torch.Tensor:
    """Heatmap ``S[l, k]`` between layer ``l``'s predictions ``(L, B, T)`` and reference iteration ``k``'s
    ``(K, B, T)``; with ``targets (B, T)`` the residuals ``yhat - y`` are compared (Fu et al.). Returns ``(L, K)``."""
    check_data("model_preds", model_preds, ndim=3)
    check_data("reference_preds", reference_preds, ndim=3)
    if model_preds.shape[1:] != reference_preds.shape[1:]:
        raise ValueError(f"model_preds {tuple(model_preds.shape)} and reference_preds "
                         f"{tuple(reference_preds.shape)} must agree in (B, T)")
    check_choice("metric", metric, ("cosine", "mse"))
    if targets is not None:
        check_data("targets", targets, ndim=2)
        check_shape("targets", targets, tuple(model_preds.shape[1:]), "(B, T) of model_preds")
        model_preds = model_preds - targets
        reference_preds = reference_preds - targets
    return prediction_similarity(model_preds[:, None], reference_preds[None], metric)


def best_match(similarity: torch.Tensor, metric: str = "cosine") -> tuple[torch.Tensor, torch.Tensor]:
    """Index and value of the best-matching reference iteration for every layer (row) of ``similarity``."""
    check_data("similarity", similarity, ndim=2)
    if similarity.shape[1] < 1:
        raise ValueError(f"similarity must have at least one column (reference iteration); got "
                         f"{tuple(similarity.shape)}")
    check_choice("metric", metric, ("cosine", "mse"))
    if metric == "cosine":
        return similarity.argmax(-1), similarity.amax(-1)
    return similarity.argmin(-1), similarity.amin(-1)


def matrix_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-300) -> float:
    """``Re <A, B> / (||A||_F ||B||_F)``: 1 when the matrices are positive multiples of each other."""
    check_data("a", a, complex_ok=True)
    check_data("b", b, complex_ok=True)
    eps = check_positive("eps", eps)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    dtype = torch.complex128 if (a.is_complex() or b.is_complex()) else torch.float64
    a, b = a.detach().to(dtype), b.detach().to(dtype)
    num = (a.conj() * b).sum().real
    return float(num / max(float(a.norm() * b.norm()), eps))


def compare_weights(trained: Mapping[str, torch.Tensor], constructed: Mapping[str, torch.Tensor]
                    ) -> dict[str, dict[str, float]]:
    """For every name in ``constructed``: ``correlation`` (:func:`matrix_correlation`) and the least-squares
    ``scale`` with ``trained ~ scale * constructed``, plus the relative residual ``||trained - scale*C|| / ||trained||``."""
    check_type("trained", trained, Mapping)
    check_type("constructed", constructed, Mapping)
    out: dict[str, dict[str, float]] = {}
    for name, c in constructed.items():
        if name not in trained:
            raise KeyError(f"trained weights have no entry {name!r}")
        check_data(f"trained[{name!r}]", trained[name], complex_ok=True)
        check_data(f"constructed[{name!r}]", c, complex_ok=True)
        if trained[name].shape != c.shape:
            raise ValueError(f"trained[{name!r}] must have the shape of constructed[{name!r}] {tuple(c.shape)}; "
                             f"got {tuple(trained[name].shape)}")
        if trained[name].is_complex() or c.is_complex():
            raise TypeError(f"compare_weights compares real weights; {name!r} is complex (use matrix_correlation)")
        t = trained[name].detach().double()
        c = c.detach().double()
        corr = matrix_correlation(t, c)
        scale = float((t * c).sum() / (c * c).sum().clamp_min(1e-300))
        resid = float((t - scale * c).norm() / t.norm().clamp_min(1e-300))
        out[name] = {"correlation": corr, "scale": scale, "relative_residual": resid}
    return out


def sensitivity_cosine(f_a: Callable[[torch.Tensor], torch.Tensor], f_b: Callable[[torch.Tensor], torch.Tensor],
                       xq: torch.Tensor) -> torch.Tensor:
    """Mean over prompts of the cosine between ``d f_a / d x_q`` and ``d f_b / d x_q``.

    ``f(xq)`` maps queries ``(B, d)`` to predictions ``(B,)`` where prediction ``i`` depends only on ``xq[i]``.
    """
    check_callable("f_a", f_a)
    check_callable("f_b", f_b)
    check_data("xq", xq, ndim=2)
    grads = []
    for name, f in (("f_a", f_a), ("f_b", f_b)):
        x = xq.detach().clone().requires_grad_(True)
        out = f(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (xq.shape[0],):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{name} must map xq {tuple(xq.shape)} to predictions of shape ({xq.shape[0]},); "
                             f"got {got}")
        if not out.requires_grad:
            raise ValueError(f"{name}'s output does not depend differentiably on xq (no gradient)")
        (g,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
        if g is None:
            raise ValueError(f"{name}'s output does not depend on xq")
        grads.append(g)
    return torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=-1).mean()
