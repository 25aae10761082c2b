"""Attention as a token-selecting max-margin SVM (Tarzanagh, Li, Thrampoulidis & Oymak 2023).

A single softmax-attention layer with a fixed linear head ``v`` reads a sequence ``X_i in R^{T x d}`` through a
query token ``z_i``: ``f(X_i) = v^T X_i^T softmax(X_i W z_i)`` (scores ``s_it = x_it^T W z_i``). The paper shows
that gradient descent on a logistic loss ``mean_i l(Y_i f(X_i))`` drives ``W`` to infinity *in the direction* of

    W^mm = argmin ||W||  s.t.  (x_{i,opt_i} - x_{i,t})^T W z_i >= 1   for all i, t != opt_i     (Att-SVM)

with the Frobenius norm for the ``W`` parameterisation and the nuclear norm for ``W = K Q^T`` (Thm. 2/5),
``opt_i`` being the token selected in the limit.

* :class:`AttentionSelector` -- the model, ``param="W"`` or ``"KQ"``.
* :func:`normalized_gd` -- ``theta <- theta - lr grad / ||grad||_F`` per parameter (float64), recording the
  combined ``W`` along the way.
* :func:`margin_matrices`, :func:`att_svm` -- the constraint matrices ``A_k = (x_opt - x_t) z^T`` (so that the
  constraint reads ``<A_k, W> >= 1``) and the SVM solution: Frobenius norm by the dual
  ``min_{alpha >= 0} 1/2 ||sum_k alpha_k A_k||^2 - sum_k alpha_k`` (scipy L-BFGS-B, ``W = sum alpha_k A_k``)
  or with cvxpy; the nuclear norm needs cvxpy (an SDP; SCS/CLARABEL).
* :func:`svm_margins`, :func:`directional_correlation` -- constraint values and ``<W, W^mm>/(||W|| ||W^mm||)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gradlab.core import check_choice, check_int, check_positive, check_tensor, check_type
from gradlab.incontext._validation import (
    check_bool, check_data, check_float_dtype, check_generator, check_same_dtype, check_shape, under_transform,
)
from gradlab.incontext.probes import matrix_correlation
from gradlab.incontext.tasks import TokenSelectionBatch

__all__ = [
    "AttentionSelector", "selector_loss", "normalized_gd", "margin_matrices", "svm_margins", "att_svm",
    "directional_correlation", "globally_optimal_tokens",
]


class AttentionSelector(nn.Module):
    """``f(X, z) = v^T X^T softmax(X W z)`` with ``W`` trained directly (``param="W"``) or as ``K Q^T``.

    Args:
        dim: token dimension ``d``.
        v: the fixed head, shape ``(d,)``.
        param: ``"W"`` or ``"KQ"``.
        rank: columns of ``K`` and ``Q`` (default ``d``).
        init_std: Gaussian initialisation scale (``Q`` starts at 0 when ``zero_query_init``).
        dtype: float64 by default (softmax saturates; float32 gradients underflow).
    """

    def __init__(self, dim: int, v: torch.Tensor, param: str = "W", rank: int | None = None, init_std: float = 0.1,
                 zero_query_init: bool = False, dtype: torch.dtype = torch.float64,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.param = check_choice("param", param, ("W", "KQ"))
        check_tensor("v", v, ndim=1, floating=True, finite=True)
        if v.shape[0] != dim:
            raise ValueError(f"v must have shape ({dim},); got {tuple(v.shape)}")
        check_float_dtype("dtype", dtype)
        check_bool("zero_query_init", zero_query_init)
        check_generator("generator", generator)
        self.register_buffer("v", v.to(dtype))
        init_std = check_positive("init_std", init_std, allow_zero=True)
        r = dim if rank is None else check_int("rank", rank, minimum=1)

        def randn(*shape: int) -> torch.Tensor:
            return init_std * torch.randn(*shape, generator=generator, dtype=dtype)

        if self.param == "W":
            self.W = nn.Parameter(randn(dim, dim))
        else:
            self.K = nn.Parameter(randn(dim, r))
            self.Q = nn.Parameter(torch.zeros(dim, r, dtype=dtype) if zero_query_init else randn(dim, r))

    def combined(self) -> torch.Tensor:
        """The attention matrix ``W`` (``K Q^T`` for the ``KQ`` parameterisation)."""
        return self.W if self.param == "W" else self.K @ self.Q.T

    def attention(self, X: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Softmax attention probabilities ``softmax(X W z)``, shape ``(n, T)``."""
        self._check_inputs(X, z)
        return torch.einsum("ntd,de,ne->nt", X, self.combined(), z).softmax(-1)

    def _check_inputs(self, X: torch.Tensor, z: torch.Tensor) -> None:
        check_data("X", X, ndim=3)
        check_data("z", z, ndim=2)
        n, t, d = X.shape
        if d != self.dim or t < 1:
            raise ValueError(f"X must have shape (n, T>=1, {self.dim}); got {tuple(X.shape)}")
        check_shape("z", z, (n, self.dim), "(n, d), one query token per sequence of X")
        check_same_dtype("X", X, self.v.dtype, "the model's dtype; convert with .to(...)")
        check_same_dtype("z", z, self.v.dtype, "the model's dtype; convert with .to(...)")

    def forward(self, X: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``f = v^T X^T softmax(X W z)``, evaluated as ``a_r + sum_t p_t (a_t - a_r)`` with ``a_t = v^T x_t`` and
        ``r`` the highest-scoring token. The value is the same; the gradient ``p_t (a_t - f)`` no longer
        suffers cancellation in ``a_r - f`` when the softmax saturates (otherwise float64 rounding, ~1e-16,
        swamps the exponentially small gradients that carry the max-margin direction)."""
        p = self.attention(X, z)
        a = X @ self.v  # (n, T)
        ref = a.gather(1, p.detach().argmax(-1, keepdim=True))
        return ref.squeeze(1) + (p * (a - ref)).sum(-1)


def _check_model_batch(model: AttentionSelector, batch: TokenSelectionBatch) -> None:
    check_type("model", model, AttentionSelector)
    check_type("batch", batch, TokenSelectionBatch)
    model._check_inputs(batch.X, batch.z)
    check_data("batch.y", batch.y, ndim=1)
    check_shape("batch.y", batch.y, (batch.X.shape[0],), "(n,), one label per sequence of batch.X")
    if not under_transform(batch.y) and not bool(((batch.y == 1) | (batch.y == -1)).all()):
        raise ValueError("batch.y must hold labels in {-1, +1}")


def selector_loss(model: AttentionSelector, batch: TokenSelectionBatch) -> torch.Tensor:
    """Logistic loss ``mean_i log(1 + exp(-Y_i f(X_i)))``."""
    _check_model_batch(model, batch)
    return nn.functional.softplus(-batch.y * model(batch.X, batch.z)).mean()


def normalized_gd(model: AttentionSelector, batch: TokenSelectionBatch, n_steps: int, lr: float = 0.1,
                  norm_penalty: float | None = None, record_every: int = 0) -> list[torch.Tensor]:
    """Normalised GD on :func:`selector_loss`: every parameter moves by ``lr * grad / ||grad||_F``.

    For ``KQ`` a penalty ``eps (||K||^2 + ||Q||^2)`` with ``eps`` = machine epsilon (default) keeps the norms
    bounded in floating point, as in the paper's code. Returns the combined ``W`` every ``record_every`` steps
    (and at the end).
    """
    _check_model_batch(model, batch)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    lr = check_positive("lr", lr)
    record_every = check_int("record_every", record_every, minimum=0)
    if norm_penalty is not None:
        norm_penalty = check_positive("norm_penalty", norm_penalty, allow_zero=True)
    if norm_penalty is None:
        norm_penalty = float(torch.finfo(torch.float64).eps) if model.param == "KQ" else 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    history: list[torch.Tensor] = []
    for step in range(1, n_steps + 1):
        loss = selector_loss(model, batch)
        if norm_penalty:
            loss = loss + norm_penalty * sum((p * p).sum() for p in params)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            norms = torch._foreach_norm(list(grads))
            for p, g, n in zip(params, grads, norms):
                if float(n) > 0:
                    p.sub_(lr * g / n)
        if (record_every and step % record_every == 0) or step == n_steps:
            history.append(model.combined().detach().clone())
    return history


def globally_optimal_tokens(batch: TokenSelectionBatch) -> torch.Tensor:
    """``opt_i = argmax_t Y_i v^T x_it`` (the tokens the global theory selects), shape ``(n,)``."""
    check_type("batch", batch, TokenSelectionBatch)
    check_data("batch.X", batch.X, ndim=3)
    check_data("batch.y", batch.y, ndim=1)
    check_data("batch.v", batch.v, ndim=1)
    n, _, d = batch.X.shape
    check_shape("batch.y", batch.y, (n,), "(n,), one label per sequence of batch.X")
    check_shape("batch.v", batch.v, (d,), "(d,), the token dimension of batch.X")
    return batch.token_scores().argmax(-1)


def margin_matrices(X: torch.Tensor, z: torch.Tensor, opt: torch.Tensor) -> torch.Tensor:
    """Constraint matrices ``A = (x_{i,opt_i} - x_{i,t}) z_i^T`` for all ``i`` and ``t != opt_i``: ``(n (T-1), d, d)``."""
    check_tensor("X", X, ndim=3, floating=True, finite=True)
    check_tensor("z", z, ndim=2, floating=True, finite=True)
    check_tensor("opt", opt, ndim=1)
    if opt.is_floating_point() or opt.is_complex() or opt.dtype == torch.bool:
        raise TypeError(f"opt must be an integer tensor of token indices; got dtype {opt.dtype}")
    n, t, d = X.shape
    if n < 1 or t < 2 or d < 1:
        raise ValueError(f"X must have shape (n>=1, T>=2, d>=1) (a margin needs a competing token); got "
                         f"{tuple(X.shape)}")
    check_same_dtype("z", z, X.dtype, "the dtype of X")
    if z.shape != (n, d) or opt.shape != (n,):
        raise ValueError(f"z must be ({n}, {d}) and opt ({n},); got {tuple(z.shape)} and {tuple(opt.shape)}")
    if opt.min() < 0 or opt.max() >= t:
        raise ValueError(f"opt must index tokens in [0, {t}); got values in [{int(opt.min())}, {int(opt.max())}]")
    idx = torch.arange(n)
    diff = X[idx, opt][:, None] - X  # (n, T, d)
    keep = torch.ones(n, t, dtype=torch.bool)
    keep[idx, opt] = False
    a = diff[keep].reshape(n, t - 1, d)
    return (a[..., :, None] * z[:, None, None, :]).reshape(n * (t - 1), d, d)


def svm_margins(W: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Constraint values ``<A_k, W>`` (all ``>= 1`` at a feasible point)."""
    check_data("W", W, ndim=2)
    check_data("A", A, ndim=3)
    check_shape("A", A, (None,) + tuple(W.shape), f"(K, {W.shape[0]}, {W.shape[1]}), the shape of W per constraint")
    return torch.einsum("kij,ij->k", A.double(), W.double())


def _fro_dual(A: torch.Tensor, tol: float) -> torch.Tensor:
    from scipy.optimize import minimize

    a = A.reshape(A.shape[0], -1).double().numpy()
    gram = a @ a.T
    m = gram.shape[0]

    def fun(alpha: np.ndarray) -> tuple[float, np.ndarray]:
        g = gram @ alpha
        return 0.5 * float(alpha @ g) - float(alpha.sum()), g - 1.0

    res = minimize(fun, np.zeros(m), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * m,
                   options={"maxiter": 50000, "ftol": tol, "gtol": tol, "maxcor": 50})
    w = torch.from_numpy(a.T @ res.x).reshape(A.shape[1:])
    return w


def _cvxpy_svm(A: torch.Tensor, norm: str) -> torch.Tensor:
    try:
        import cvxpy as cp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("att_svm with norm='nuc' (or solver='cvxpy') needs cvxpy: pip install cvxpy") from exc
    d1, d2 = A.shape[1:]
    a = A.reshape(A.shape[0], -1).double().numpy()
    w = cp.Variable((d1, d2))
    # row-major flattening: vec(W)[i*d2 + j] = W[i, j]
    constraints = [a @ cp.reshape(w, (d1 * d2,), order="C") >= 1]
    objective = cp.norm(w, "fro") if norm == "fro" else cp.normNuc(w)
    prob = cp.Problem(cp.Minimize(objective), constraints)
    solver = "CLARABEL" if "CLARABEL" in cp.installed_solvers() else None
    prob.solve(solver=solver)
    if prob.status not in ("optimal", "optimal_inaccurate") or w.value is None:
        raise ValueError(f"Att-SVM is infeasible or the solver failed (status {prob.status!r})")
    return torch.from_numpy(np.asarray(w.value))


def att_svm(X: torch.Tensor, z: torch.Tensor, opt: torch.Tensor, norm: str = "fro", solver: str = "auto",
            tol: float = 1e-14) -> torch.Tensor:
    """Solve the Att-SVM for the selected tokens ``opt`` (float64 ``(d, d)`` result).

    Args:
        X, z, opt: tokens ``(n, T, d)``, query tokens ``(n, d)`` and selected indices ``(n,)``.
        norm: ``"fro"`` (limit of the ``W`` parameterisation) or ``"nuc"`` (limit of ``K Q^T``).
        solver: ``"auto"`` (scipy dual for ``fro``, cvxpy for ``nuc``), ``"scipy"`` or ``"cvxpy"``.

    Raises ``ValueError`` when the constraints cannot be met (no separating ``W``).
    """
    check_choice("norm", norm, ("fro", "nuc"))
    check_choice("solver", solver, ("auto", "scipy", "cvxpy"))
    check_type("tol", tol, float)
    tol = check_positive("tol", tol, allow_zero=True)
    A = margin_matrices(X, z, opt)
    if norm == "nuc" and solver == "scipy":
        raise ValueError("solver='scipy' supports only norm='fro'; use solver='cvxpy' for the nuclear norm")
    if norm == "fro" and solver in ("auto", "scipy"):
        w = _fro_dual(A, tol)
    else:
        w = _cvxpy_svm(A, norm)
    margins = svm_margins(w, A)
    if not bool(torch.isfinite(w).all()) or float(margins.min()) < 1 - 1e-3:
        raise ValueError(f"Att-SVM is infeasible for these tokens (smallest margin {float(margins.min()):.3g} < 1)")
    return w


def directional_correlation(W: torch.Tensor, W_svm: torch.Tensor) -> float:
    """``<W, W_svm> / (||W||_F ||W_svm||_F)`` (direction agreement, 1 = same direction)."""
    check_data("W", W, ndim=2)
    check_data("W_svm", W_svm, ndim=2)
    return matrix_correlation(W, W_svm)
