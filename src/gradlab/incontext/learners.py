"""Reference in-context learners and the explicit attention weights that implement them.

Every learner solves the in-context least-squares problem of a batch of prompts ``X (B, N, d)``, ``y (B, N)``,

    L(w) = 1/2 sum_i (w^T x_i - y_i)^2       (or its mean, ``normalize=True``),

and returns weight vectors ``(B, d)`` (or a stack over iterations ``(K, B, d)``). They depend on the data only
through ``S = X^T X`` and ``X^T y``, so zero rows are ignored; :func:`prefix_predictions` uses this to evaluate
a learner on every prefix of a prompt in one batched call (the Garg/Fu convention).

* :func:`ols`, :func:`ridge` -- closed forms ``S^+ X^T y`` and ``(S + lam I)^{-1} X^T y``.
* :func:`gradient_descent` / :func:`gd_iterates` -- ``w_{k+1} = w_k - eta grad L(w_k)`` iteratively / in closed
  form ``w_k = (I - eta S)^k w_0 + V diag((1 - (1 - eta lam)^k) / lam) V^T X^T y`` for any set of step counts.
* :func:`gd_plus_plus` -- GD++ of von Oswald et al. (2023): each step also maps every input through
  ``x <- (I - gamma S) x``, a curvature correction that acts as a preconditioner.
* :func:`newton_schulz` / :func:`newton_iterates` -- iterative Newton for ``S^+``: ``M_0 = alpha S``,
  ``M_{k+1} = 2 M_k - M_k S M_k`` with ``alpha = 1/||S S^T||_F`` (Fu et al. 2023, strictly inside the
  convergence region ``alpha < 2/||S S^T||_2``), and ``w_k = M_k X^T y``.
* :func:`gd_lsa_construction`, :func:`gd_plus_plus_construction` -- the LSA weights of von Oswald et al.
  (Prop. 1): ``W_K = W_Q = [[I, 0], [0, 0]]``, ``W_V = [[0, 0], [0, -1]]``, ``P = eta/N I``; one layer applied
  to the tokens ``(x_j, y_j)``, ``(x_q, 0)`` (keys exclude the query, prediction ``= -y``-slot) is one GD step
  from ``w_0 = 0`` on the mean loss, ``K`` layers are ``K`` steps.
* :func:`zfb_gamma`, :func:`zfb_population_risk` -- the global minimum ``Gamma^{-1}``,
  ``Gamma = (1 + 1/N) Lambda + tr(Lambda)/N I`` of one LSA layer trained on Gaussian prompts and the population
  risk of the preconditioned one-step predictor (Zhang, Frei & Bartlett 2024, Thm. 4.1).
* :func:`one_step_gd_ar`, :func:`mesa_construction` -- one GD step on the in-context autoregressive OLS problem
  ``1/2 sum_i ||x_i - W x_{i-1}||^2`` from ``W = 0``, applied to ``x_t`` (Zheng et al. 2024), and the causal
  LSA weights implementing it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from gradlab.core import check_int, check_positive, check_tensor
from gradlab.incontext._validation import (
    check_bool, check_callable, check_complex_or_float_dtype, check_data, check_same_dtype,
    check_scalar, check_shape, check_step_list, check_w0, check_xy, under_transform,
)

__all__ = [
    "ols", "ridge", "gradient_descent", "gd_iterates", "gd_plus_plus", "newton_schulz", "newton_iterates",
    "prefix_predictions", "gd_lsa_construction", "gd_plus_plus_construction", "zfb_gamma", "zfb_population_risk",
    "one_step_gd_ar", "mesa_construction",
]


def _check_xy(xs: torch.Tensor, ys: torch.Tensor) -> tuple[int, int, int]:
    return check_xy(xs, ys)


def _stats(xs: torch.Tensor, ys: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    s = xs.mT @ xs
    b = (xs.mT @ ys[..., None]).squeeze(-1)
    if normalize:
        n = max(xs.shape[1], 1)
        s, b = s / n, b / n
    return s, b


def ols(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares ``w = X^+ y`` for each prompt, shape ``(B, d)``."""
    _check_xy(xs, ys)
    return (torch.linalg.pinv(xs) @ ys[..., None]).squeeze(-1)


def ridge(xs: torch.Tensor, ys: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression ``w = (X^T X + lam I)^{-1} X^T y``, shape ``(B, d)``."""
    _check_xy(xs, ys)
    lam = check_positive("lam", lam)
    s, b = _stats(xs, ys, False)
    eye = torch.eye(xs.shape[-1], dtype=xs.dtype, device=xs.device)
    return torch.linalg.solve(s + lam * eye, b)


def gradient_descent(xs: torch.Tensor, ys: torch.Tensor, n_steps: int, lr: float, w0: torch.Tensor | None = None,
                     normalize: bool = False) -> torch.Tensor:
    """``n_steps`` of GD ``w <- w - lr X^T (X w - y)`` (divided by ``N`` if ``normalize``) from ``w0`` (default 0)."""
    bsz, _, d = _check_xy(xs, ys)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    lr = check_positive("lr", lr)
    check_bool("normalize", normalize)
    if w0 is not None:
        check_w0(w0, bsz, d)
    s, b = _stats(xs, ys, normalize)
    w = torch.zeros_like(b) if w0 is None else w0.to(b.dtype).expand_as(b).clone()
    for _ in range(n_steps):
        w = w - lr * ((s @ w[..., None]).squeeze(-1) - b)
    return w


def gd_iterates(xs: torch.Tensor, ys: torch.Tensor, steps: Sequence[int], lr: float,
                w0: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
    """GD iterates at the step counts ``steps`` in closed form (float64 eigendecomposition), shape ``(K, B, d)``.

    ``w_k = (I - lr S)^k w_0 + V diag(f_k(lam)) V^T X^T y`` with ``f_k(lam) = (1 - (1 - lr lam)^k) / lam`` and
    ``f_k(0) = k lr``; equal to :func:`gradient_descent` but cost independent of ``k``.
    """
    bsz, _, d = _check_xy(xs, ys)
    lr = check_positive("lr", lr)
    ks = check_step_list("steps", steps)
    check_bool("normalize", normalize)
    if w0 is not None:
        check_w0(w0, bsz, d)
    s, b = _stats(xs.double(), ys.double(), normalize)
    lam, v = torch.linalg.eigh(s)
    lam = lam.clamp_min(0)
    k = torch.tensor(ks, dtype=torch.float64)[:, None, None]
    decay = (1 - lr * lam)[None] ** k  # (K, B, d)
    small = lam < 1e-12 * lam.amax(-1, keepdim=True).clamp_min(1e-300)
    f = torch.where(small[None], k * lr, (1 - decay) / torch.where(small, 1.0, lam)[None])
    vb = (v.mT @ b[..., None]).squeeze(-1)  # (B, d)
    w = torch.einsum("bij,kbj->kbi", v, f * vb[None])
    if w0 is not None:
        vw0 = (v.mT @ w0.double().expand_as(b)[..., None]).squeeze(-1)
        w = w + torch.einsum("bij,kbj->kbi", v, decay * vw0[None])
    return w.to(xs.dtype)


def gd_plus_plus(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, n_steps: int, lr: float,
                 gamma: float) -> torch.Tensor:
    """Query predictions of ``n_steps`` of GD++ (von Oswald et al. 2023, Sec. 3), shape ``(B,)``.

    Each step, with ``S = X^T X`` of the current inputs and the current residual labels ``r`` (``r = y`` at
    first): ``yhat_q += lr/N * r^T X x_q``; ``r <- r - lr/N * X X^T r``; ``X <- X (I - gamma S)``,
    ``x_q <- (I - gamma S) x_q``. With ``gamma = 0`` this is ``n_steps`` of GD on the mean loss from ``w = 0``.
    """
    bsz, _, d = _check_xy(xs, ys)
    check_data("xq", xq, ndim=2)
    check_shape("xq", xq, (bsz, d), "(B, d), one query per prompt of xs")
    check_same_dtype("xq", xq, xs.dtype, "the dtype of xs")
    n_steps = check_int("n_steps", n_steps, minimum=0)
    lr = check_positive("lr", lr)
    gamma = check_positive("gamma", gamma, allow_zero=True)
    n = max(xs.shape[1], 1)
    x, r, q = xs, ys, xq
    pred = ys.new_zeros(ys.shape[0])
    eye = torch.eye(xs.shape[-1], dtype=xs.dtype, device=xs.device)
    for _ in range(n_steps):
        xr = (x.mT @ r[..., None]).squeeze(-1)  # X^T r
        pred = pred + lr / n * (xr * q).sum(-1)
        r = r - lr / n * (x @ xr[..., None]).squeeze(-1)
        t = eye - gamma * (x.mT @ x)
        x, q = x @ t, (t @ q[..., None]).squeeze(-1)
    return pred


def newton_schulz(s: torch.Tensor, n_iters: int, alpha: float | torch.Tensor | None = None,
                  return_all: bool = False) -> torch.Tensor:
    """Newton-Schulz iteration for the pseudo-inverse of symmetric PSD ``s`` (``(..., d, d)``).

    ``M_0 = alpha S``, ``M_{k+1} = 2 M_k - M_k S M_k``; ``alpha`` defaults to ``1 / ||S S^T||_F`` per matrix.
    Each eigenvalue ``lam`` of ``S`` maps to ``m_k`` with ``1 - lam m_{k+1} = (1 - lam m_k)^2``: after a warm-up
    of about ``log2(||S S^T||_F / lam_min^2)`` iterations convergence is quadratic. For singular ``S`` the limit is
    ``S^+``, but rounding-level eigenvalues (~1e-16) are inverted too after ~50 iterations, so stop earlier.
    Returns ``M_{n_iters}``, or all of ``M_0 .. M_{n_iters}`` stacked on a new first axis with ``return_all``.
    """
    check_tensor("s", s, floating=True, finite=True)
    if s.ndim < 2 or s.shape[-1] != s.shape[-2]:
        raise ValueError(f"s must be a (batch of) square matrices; got shape {tuple(s.shape)}")
    n_iters = check_int("n_iters", n_iters, minimum=0)
    check_bool("return_all", return_all)
    asym = float((s - s.mT).abs().amax()) if s.numel() and not under_transform(s) else 0.0
    if asym > 1e-5 * max(float(s.abs().amax()) if s.numel() else 0.0, 1e-30):
        raise ValueError(f"s must be symmetric (a Gram matrix X^T X); got max |s - s^T| = {asym:.3g}")
    if alpha is None:
        alpha = 1.0 / torch.linalg.matrix_norm(s @ s.mT).clamp_min(torch.finfo(s.dtype).tiny)[..., None, None]
    elif isinstance(alpha, torch.Tensor):
        check_data("alpha", alpha)
        if not under_transform(alpha) and bool((alpha <= 0).any()):
            raise ValueError("alpha must be > 0 (every entry)")
        try:
            torch.broadcast_shapes(alpha.shape, s.shape)
        except RuntimeError:
            raise ValueError(f"alpha must be a scalar or broadcast against s {tuple(s.shape)} (e.g. shape "
                             f"{tuple(s.shape[:-2]) + (1, 1)}); got {tuple(alpha.shape)}") from None
        if torch.broadcast_shapes(alpha.shape, s.shape) != s.shape:
            raise ValueError(f"alpha of shape {tuple(alpha.shape)} would broadcast s {tuple(s.shape)} to a larger "
                             f"batch; use shape {tuple(s.shape[:-2]) + (1, 1)}")
    else:
        alpha = check_positive("alpha", alpha)
    m = alpha * s
    out = [m]
    for _ in range(n_iters):
        m = 2 * m - m @ s @ m
        out.append(m)
    return torch.stack(out) if return_all else m


def newton_iterates(xs: torch.Tensor, ys: torch.Tensor, iters: Sequence[int],
                    alpha: float | None = None) -> torch.Tensor:
    """``w_k = M_k X^T y`` of iterative Newton (:func:`newton_schulz` in float64) for ``k`` in ``iters``: ``(K, B, d)``."""
    _check_xy(xs, ys)
    ks = check_step_list("iters", iters)
    if alpha is not None and not isinstance(alpha, torch.Tensor):
        check_positive("alpha", alpha)
    s, b = _stats(xs.double(), ys.double(), False)
    ms = newton_schulz(s, max(ks), alpha, return_all=True)[ks]
    return (ms @ b[None, ..., None]).squeeze(-1).to(xs.dtype)


def prefix_predictions(learner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xs: torch.Tensor,
                       ys: torch.Tensor) -> torch.Tensor:
    """Predict every ``y_i`` from the prefix ``(x_1, y_1, ..., x_{i-1}, y_{i-1})`` with one batched call.

    ``learner(X, y)`` must return weights ``(B', d)`` or a stack ``(K, B', d)`` and depend on ``X, y`` only
    through ``X^T X`` and ``X^T y`` (true for every learner here); the prefixes are the prompt with later rows
    zeroed. Returns ``(B, N)`` or ``(K, B, N)``.
    """
    check_callable("learner", learner)
    b, n, d = _check_xy(xs, ys)
    keep = torch.tril(torch.ones(n, n, dtype=xs.dtype, device=xs.device), diagonal=-1)  # row i keeps j < i
    px = (xs[:, None] * keep[None, :, :, None]).reshape(b * n, n, d)
    py = (ys[:, None] * keep[None]).reshape(b * n, n)
    w = learner(px, py)
    if not isinstance(w, torch.Tensor) or w.ndim not in (2, 3) or tuple(w.shape[-2:]) != (b * n, d):
        got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"learner must return weights of shape ({b * n}, {d}) or (K, {b * n}, {d}) for the "
                         f"{b * n} prefixes; got {got}")
    if w.ndim == 2:
        return (w.reshape(b, n, d) * xs).sum(-1)
    return (w.reshape(w.shape[0], b, n, d) * xs[None]).sum(-1)


def _block_eye(d: int, dtype: torch.dtype) -> torch.Tensor:
    m = torch.zeros(d + 1, d + 1, dtype=dtype)
    m[:d, :d] = torch.eye(d, dtype=dtype)
    return m


def gd_lsa_construction(d: int, lr: float, n_context: int, dtype: torch.dtype = torch.float32
                        ) -> dict[str, torch.Tensor]:
    """State dict of a one-head ``LinearSelfAttention(d + 1, parametrization="separate", include_query=False)``
    that performs one GD step from ``w_0 = 0`` on ``1/(2N) sum (w^T x_j - y_j)^2`` (von Oswald et al., Prop. 1).

    Read the prediction with ``regression_prediction(tokens, sign=-1)``.
    """
    d = check_int("d", d, minimum=1)
    lr = check_positive("lr", lr)
    n = check_int("n_context", n_context, minimum=1)
    check_complex_or_float_dtype("dtype", dtype)
    kq = _block_eye(d, dtype)
    wv = torch.zeros(d + 1, d + 1, dtype=dtype)
    wv[d, d] = -1.0
    proj = (lr / n) * torch.eye(d + 1, dtype=dtype)
    return {"w_q": kq[None].clone(), "w_k": kq[None].clone(), "w_v": wv[None], "proj": proj[None]}


def gd_plus_plus_construction(d: int, lr: float, gamma: float, n_context: int, dtype: torch.dtype = torch.float32
                              ) -> dict[str, torch.Tensor]:
    """State dict of a one-head merged ``LinearSelfAttention(d + 1, parametrization="merged", include_query=False)``
    performing one GD++ step (:func:`gd_plus_plus`): ``W^{KQ} = [[I, 0], [0, 0]]``,
    ``W^{PV} = [[-gamma I, 0], [0, -lr/N]]``."""
    d = check_int("d", d, minimum=1)
    lr = check_positive("lr", lr)
    gamma = check_positive("gamma", gamma, allow_zero=True)
    n = check_int("n_context", n_context, minimum=1)
    check_complex_or_float_dtype("dtype", dtype)
    pv = -gamma * _block_eye(d, dtype)
    pv[d, d] = -lr / n
    return {"w_kq": _block_eye(d, dtype)[None], "w_pv": pv[None]}


def zfb_gamma(covariance: torch.Tensor, n_context: int) -> torch.Tensor:
    """``Gamma = (1 + 1/N) Lambda + tr(Lambda)/N I`` (Zhang, Frei & Bartlett 2024); the trained LSA predicts
    ``x_q^T Gamma^{-1} (1/N) sum_i y_i x_i``."""
    check_data("covariance", covariance, ndim=2)
    d = covariance.shape[0]
    check_shape("covariance", covariance, (d, d), "(square)")
    n = check_int("n_context", n_context, minimum=1)
    return _zfb_gamma(covariance, n)


def _zfb_gamma(covariance: torch.Tensor, n: int) -> torch.Tensor:
    eye = torch.eye(covariance.shape[0], dtype=covariance.dtype, device=covariance.device)
    return (1 + 1 / n) * covariance + torch.trace(covariance) / n * eye


def zfb_population_risk(b: torch.Tensor, covariance: torch.Tensor, n_context: int) -> torch.Tensor:
    """Population risk ``1/2 E (x_q^T B (1/M) sum_i y_i x_i - x_q^T w)^2`` for ``x ~ N(0, Lambda)``,
    ``w ~ N(0, I)``, noiseless labels and ``M = n_context``:
    ``1/2 [tr(B^T Lambda B Lambda Gamma_M) - 2 tr(Lambda B Lambda) + tr Lambda]``. Differentiable in ``b``."""
    check_data("b", b, ndim=2)
    check_data("covariance", covariance, ndim=2)
    d = covariance.shape[0]
    check_shape("covariance", covariance, (d, d), "(square)")
    check_shape("b", b, (d, d), f"(the {d} x {d} shape of covariance)")
    n = check_int("n_context", n_context, minimum=1)
    lam = covariance.to(b.dtype)
    g = _zfb_gamma(lam, n)
    return 0.5 * (torch.trace(b.T @ lam @ b @ lam @ g) - 2 * torch.trace(lam @ b @ lam) + torch.trace(lam))


def one_step_gd_ar(xs: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Predictions ``yhat_t = c/(t-1) sum_{i=2}^{t} x_i x_{i-1}^H x_t`` of ``x_{t+1}`` (1-based ``t``; ``rho_1 = 1``)
    for sequences ``xs (B, T, d)``: one GD step from ``W = 0`` on ``1/2 sum_i ||x_i - W x_{i-1}||^2``."""
    check_data("xs", xs, ndim=3, complex_ok=True)
    check_scalar("c", c, complex_ok=True)
    b, t, d = xs.shape
    prev = torch.cat([torch.zeros_like(xs[:, :1]), xs[:, :-1]], 1)
    outer = torch.cumsum(xs[..., :, None] * prev[..., None, :].conj(), dim=1)  # (B, T, d, d)
    rho = torch.arange(t, device=xs.device).clamp_min(1).to(xs.real.dtype)
    return c * (outer @ xs[..., None]).squeeze(-1) / rho[None, :, None]


def mesa_construction(d: int, a: float, b: float, dtype: torch.dtype = torch.complex64) -> dict[str, torch.Tensor]:
    """State dict of ``LinearSelfAttention(2d, out_dim=d, parametrization="merged", causal=True, normalize=True,
    residual=False)`` on ``ar_tokens`` with ``W^{KQ} = [[0, 0], [a I, 0]]``, ``W^{PV} = [b I, 0]``: it equals
    :func:`one_step_gd_ar` with ``c = a b`` (Zheng et al. 2024, Sec. 4)."""
    d = check_int("d", d, minimum=1)
    check_scalar("a", a, complex_ok=True)
    check_scalar("b", b, complex_ok=True)
    check_complex_or_float_dtype("dtype", dtype)
    if (isinstance(a, complex) or isinstance(b, complex)) and not dtype.is_complex:
        raise TypeError(f"dtype must be complex for complex a or b; got {dtype}")
    kq = torch.zeros(2 * d, 2 * d, dtype=dtype)
    kq[d:, :d] = a * torch.eye(d, dtype=dtype)
    pv = torch.zeros(d, 2 * d, dtype=dtype)
    pv[:, :d] = b * torch.eye(d, dtype=dtype)
    return {"w_kq": kq[None], "w_pv": pv[None]}

