"""NTK ensembles of two-layer ReLU networks that learn a permutation from the k standard basis vectors.

Giapitzakis, Back de Luca & Fountoulakis, *Exact Learning of Permutations for Nonzero Binary Inputs with
Logarithmic Training Size and Quadratic Ensemble Complexity* (arXiv 2502.16763).

Task. A fixed permutation ``pi`` of k positions acts on binary vectors by ``(P x)_j = x_{pi(j)}``. The training
set is the k standard basis vectors ``e_i`` with targets ``P e_i``; the test set is all ``2^k - 1`` nonzero binary
vectors.

Model. ``f(x) = m^{-1/2} A ReLU(W x~)`` with ``W ~ N(0, 1)``, ``A ~ N(0, 1)`` (NTK parameterisation), both layers
trained by full-batch GD on the squared loss; ``x~ = (x, beta)`` optionally appends a constant (a first-layer bias
of scale ``beta``). In the infinite-width limit the trained network is the NTK Gaussian process (Lee et al. 2019)

    f_inf(x) = f_0(x) + Theta(x, X) Theta(X, X)^{-1} (Y - f_0(X)),   f_0 ~ GP(0, K),

with the arc-cosine kernels (theta = angle between x and x')::

    K(x, x')     = |x| |x'| (sin theta + (pi - theta) cos theta) / (2 pi)        (NNGP)
    Theta(x, x') = K(x, x') + <x, x'> (pi - theta) / (2 pi)                      (NTK).

Output coordinates are independent with mean ``mu(x) = Theta(x, X) Theta^{-1} Y`` and variance
``K(x,x) - 2 Theta(x,X) Theta^{-1} K(X,x) + Theta(x,X) Theta^{-1} K(X,X) Theta^{-1} Theta(X,x)``. Averaging ``M``
independently trained networks divides the variance by M; rounding the mean (``> threshold``) recovers ``P x``
exactly with a probability that has a closed form. The paper's statement: the ensemble size needed grows like
``k log k`` for one input and ``k^2`` for all inputs at once.

The empirical NTK of any module is computed with ``torch.func`` (:func:`empirical_ntk`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.stats import norm
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn import functional as F

from gradlab.core import check_choice, check_int, check_positive, check_range, check_tensor
from gradlab.dynamics._validation import (
    check_bool, check_callable, check_data, check_features, check_float_dtype, check_generator, check_int_list,
    check_module, check_real, check_same_dtype, check_shape,
)

__all__ = [
    "binary_inputs", "permute_bits", "augment_bias", "relu_nngp", "relu_ntk", "ntk_regression", "ntk_gp_posterior",
    "exact_recovery_probability", "required_ensemble_size", "permutation_ensemble_complexity", "empirical_ntk",
    "TwoLayerNTKNet", "TwoLayerNTKEnsemble", "fit_ensemble", "round_outputs", "exact_recovery_rate",
]

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def binary_inputs(k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All ``2^k - 1`` nonzero binary vectors of length k as rows (row ``i`` is the binary code of ``i + 1``)."""
    k = check_int("k", k, minimum=1, maximum=24)
    if not isinstance(dtype, torch.dtype) or dtype.is_complex or dtype == torch.bool:
        raise TypeError(f"dtype must be a real torch.dtype; got {dtype!r}")
    codes = torch.arange(1, 2**k)
    bits = (codes[:, None] >> torch.arange(k)[None, :]) & 1
    return bits.to(dtype)


def permute_bits(x: torch.Tensor, perm: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """``(P x)_j = x_{perm[j]}`` for each row of ``x`` (shape (n, k))."""
    check_tensor("x", x, ndim=2)
    if isinstance(perm, torch.Tensor):
        if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool:
            raise TypeError(f"perm must hold integer indices; got dtype {perm.dtype}")
    else:
        perm = check_int_list("perm", perm, min_len=0)
    perm = torch.as_tensor(perm, dtype=torch.long)
    k = x.shape[1]
    if perm.ndim != 1 or perm.numel() != k or not torch.equal(torch.sort(perm).values, torch.arange(k)):
        raise ValueError(f"perm must be a permutation of range({k}); got {perm.tolist()}")
    return x[:, perm]


def augment_bias(x: torch.Tensor, bias: float) -> torch.Tensor:
    """Append a constant column ``bias`` to ``x`` (the input view of a first-layer bias); no-op if ``bias == 0``."""
    bias = check_positive("bias", bias, allow_zero=True)
    check_tensor("x", x, ndim=2)
    if bias == 0:
        return x
    return torch.cat([x, torch.full((x.shape[0], 1), bias, dtype=x.dtype, device=x.device)], dim=1)


def _angles(x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_tensor("x1", x1, ndim=2, floating=True, finite=True)
    check_tensor("x2", x2, ndim=2, floating=True, finite=True)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of features; got {x1.shape[1]} and {x2.shape[1]}")
    check_same_dtype("x2", x2, x1.dtype, "the dtype of x1")
    n1, n2 = x1.norm(dim=1), x2.norm(dim=1)
    dot = x1 @ x2.T
    norms = n1[:, None] * n2[None, :]
    cos = torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(x1.dtype).tiny), torch.ones_like(dot))
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    return dot, norms, theta


def relu_nngp(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """NNGP kernel ``E_w[ReLU(w.x) ReLU(w.x')] = |x||x'|(sin t + (pi - t) cos t)/(2 pi)``, w ~ N(0, I)."""
    dot, norms, theta = _angles(x1, x2)
    return norms * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)


def relu_ntk(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """NTK of ``m^{-1/2} a.ReLU(W x)`` with both layers trained: ``K + <x, x'>(pi - t)/(2 pi)``."""
    dot, norms, theta = _angles(x1, x2)
    nngp = norms * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    return nngp + dot * (math.pi - theta) / (2 * math.pi)


def ntk_regression(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, kernel: Kernel = relu_ntk
) -> torch.Tensor:
    """Kernel regression mean ``Theta(x, X) Theta(X, X)^{-1} Y`` (the ensemble mean of infinitely many nets)."""
    check_callable("kernel", kernel)
    check_tensor("x_train", x_train, floating=True, finite=True)
    check_tensor("x_test", x_test, floating=True, finite=True)
    check_tensor("y_train", y_train, ndim=(1, 2), floating=True, finite=True)
    if x_train.ndim < 1 or y_train.shape[0] != x_train.shape[0]:
        raise ValueError(f"y_train has {y_train.shape[0]} rows but x_train has shape {tuple(x_train.shape)}")
    if x_test.ndim != x_train.ndim or x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"x_test must have shape (n_test, {', '.join(map(str, x_train.shape[1:]))}) like x_train; "
                         f"got {tuple(x_test.shape)}")
    check_same_dtype("x_test", x_test, x_train.dtype, "the dtype of x_train")
    check_same_dtype("y_train", y_train, x_train.dtype, "the dtype of x_train")
    gram = kernel(x_train, x_train)
    return kernel(x_test, x_train) @ _solve_gram(gram, y_train)


def _solve_gram(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``gram^{-1} rhs``; a numerically singular kernel matrix (repeated or degenerate training inputs) is a
    ``ValueError``. Numerical rank as in ``numpy.linalg.matrix_rank``: singular values below
    ``sigma_max * n * eps`` count as zero (LU would otherwise return a huge, meaningless solution)."""
    message = ("the kernel matrix of x_train is singular (repeated, zero or otherwise degenerate training inputs): "
               "kernel regression is not defined")
    sv = torch.linalg.svdvals(gram)
    if gram.shape[-1] and bool(sv[-1] <= sv[0] * gram.shape[-1] * torch.finfo(gram.dtype).eps):
        raise ValueError(message)
    try:
        return torch.linalg.solve(gram, rhs)
    except torch.linalg.LinAlgError:
        raise ValueError(message) from None


def ntk_gp_posterior(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean weights and per-output variance of the trained infinite-width network (NTK-GP, MSE to convergence).

    Returns:
        ``(coef, var)``: ``coef = Theta(x_test, X) Theta(X, X)^{-1}`` of shape (n_test, n_train), so the mean is
        ``coef @ Y``; ``var`` (n_test,) is the variance of every output coordinate.
    """
    check_data("x_train", x_train, ndim=2)
    check_data("x_test", x_test, ndim=2)
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_test must have shape (n_test, {x_train.shape[1]}) like x_train; got {tuple(x_test.shape)}")
    check_same_dtype("x_test", x_test, x_train.dtype, "the dtype of x_train")
    theta_xx = relu_ntk(x_train, x_train)
    k_xx = relu_nngp(x_train, x_train)
    theta_tx = relu_ntk(x_test, x_train)
    k_tx = relu_nngp(x_test, x_train)
    coef = _solve_gram(theta_xx, theta_tx.T).T  # Theta(x, X) Theta^{-1} (Theta symmetric)
    k_tt = x_test.pow(2).sum(1) / 2  # K(x, x) = |x|^2 / 2 (theta = 0)
    var = k_tt - 2 * (coef * k_tx).sum(1) + ((coef @ k_xx) * coef).sum(1)
    # cancellation leaves ~1e-16 at training points, where the variance is exactly 0
    var = torch.where(var > 1e-12 * k_tt.clamp_min(1.0), var, torch.zeros_like(var))
    return coef, var


def _check_mean_var_targets(mean: torch.Tensor, var: torch.Tensor, targets: torch.Tensor) -> None:
    check_data("mean", mean, ndim=2)
    n, k = mean.shape
    check_data("var", var, ndim=1)
    check_shape("var", var, (n,), "(one variance per row of mean)")
    if bool((var < 0).any()):
        raise ValueError(f"var must be >= 0; got a minimum of {float(var.min()):.3g}")
    check_tensor("targets", targets, ndim=2)
    check_shape("targets", targets, (n, k), "(the shape of mean)")
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError("targets must be binary (0 or 1)")


def exact_recovery_probability(
    mean: torch.Tensor, var: torch.Tensor, targets: torch.Tensor, ensemble_size: int | float, threshold: float = 0.0
) -> np.ndarray:
    """P(every coordinate of ``round(ensemble mean)`` equals the binary target), per input.

    The M-member mean has independent Gaussian coordinates ``N(mean, var / M)``; a coordinate is rounded to 1 iff
    it exceeds ``threshold``. Zero-variance coordinates are deterministic (``mean > threshold``).

    Args:
        mean: (n, k) GP means; var: (n,) per-input variance; targets: (n, k) in {0, 1}.
    """
    m = check_positive("ensemble_size", ensemble_size)
    _check_mean_var_targets(mean, var, targets)
    threshold = check_real("threshold", threshold)
    mu = mean.detach().double().cpu().numpy()
    sd = np.sqrt(var.detach().double().cpu().numpy() / m)[:, None]
    t = targets.detach().double().cpu().numpy()
    margin = np.where(t > 0.5, mu - threshold, threshold - mu)
    # deterministic coordinates (zero variance, e.g. at training points): rounding uses ``mean > threshold``, so
    # a 0-bit whose mean equals the threshold (up to 1e-9) is recovered, a 1-bit is not
    tol = 1e-9
    det_ok = np.where(t > 0.5, margin > tol, margin >= -tol)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, margin / np.where(sd > 0, sd, 1.0), np.where(det_ok, np.inf, -np.inf))
    return np.exp(norm.logcdf(z).sum(axis=1))


def required_ensemble_size(
    mean: torch.Tensor,
    var: torch.Tensor,
    targets: torch.Tensor,
    delta: float = 0.05,
    threshold: float = 0.0,
    joint: bool = False,
    weights: torch.Tensor | Sequence[float] | None = None,
) -> float:
    """Smallest ensemble size M with failure probability <= ``delta``.

    ``joint=False``: for the worst single input, ``min_x P(exact | x, M) >= 1 - delta``.
    ``joint=True``: for all inputs at once via the union bound ``sum_x w_x (1 - P(exact | x, M)) <= delta``
    (``weights`` count how many inputs each row stands for; default 1).
    Returns ``inf`` if some coordinate is on the wrong side of ``threshold`` in the infinite-ensemble limit.
    """
    delta = check_range("delta", delta, 0.0, 1.0, low_inclusive=False)
    _check_mean_var_targets(mean, var, targets)
    threshold = check_real("threshold", threshold)
    check_bool("joint", joint)
    if weights is None:
        w = np.ones(mean.shape[0])
    else:
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().tolist()
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
            raise TypeError(f"weights must be a sequence of numbers; got {type(weights).__name__}")
        w = np.asarray([check_real(f"weights[{i}]", v) for i, v in enumerate(weights)], dtype=float)
        if w.shape != (mean.shape[0],):
            raise ValueError(f"weights must have one entry per row of mean ({mean.shape[0]}); got {w.shape[0]}")
        if np.any(w < 0):
            raise ValueError("weights must be >= 0")

    def ok(m: float) -> bool:
        fail = 1.0 - exact_recovery_probability(mean, var, targets, m, threshold)
        return bool((w * fail).sum() <= delta) if joint else bool(fail.max() <= delta)

    hi = 1.0
    while not ok(hi):
        hi *= 2.0
        if hi > 2.0**60:
            return math.inf
    lo = hi / 2.0
    if hi == 1.0:
        return 1.0
    while hi - lo > 1.0:  # integer bisection on (lo, hi]
        mid = math.floor((lo + hi) / 2.0)
        if ok(mid):
            hi = float(mid)
        else:
            lo = float(mid)
    return float(math.ceil(hi))


def permutation_ensemble_complexity(
    k: int, delta: float = 0.05, threshold: float = 0.0, bias: float = 0.0
) -> dict[str, float]:
    """Closed-form ensemble sizes for learning a permutation of k bits from the k basis vectors.

    By symmetry the NTK-GP mean and variance of an input depend only on its number of ones ``s``; one
    representative per ``s`` (weighted by ``C(k, s)``) gives exact answers for all ``2^k - 1`` inputs without
    enumerating them (the permutation itself does not matter, so the identity is used).

    Returns:
        ``{"single": worst-input M, "all": all-inputs M (union bound), "gamma1_min", "gamma0_max", "std_max"}``.
    """
    k = check_int("k", k, minimum=2)
    delta = check_range("delta", delta, 0.0, 1.0, low_inclusive=False)
    check_real("threshold", threshold)
    x_train = augment_bias(torch.eye(k, dtype=torch.float64), bias)
    reps = torch.tril(torch.ones(k, k, dtype=torch.float64))  # row s-1 has s leading ones
    coef, var = ntk_gp_posterior(x_train, augment_bias(reps, bias))
    mean = coef @ torch.eye(k, dtype=torch.float64)
    weights = [math.comb(k, s) for s in range(1, k + 1)]
    ones = reps > 0.5
    return {
        "single": required_ensemble_size(mean, var, reps, delta, threshold, joint=False),
        "all": required_ensemble_size(mean, var, reps, delta, threshold, joint=True, weights=weights),
        "gamma1_min": float(mean[ones].min()),
        "gamma0_max": float(mean[~ones].max()) if bool((~ones).any()) else float("nan"),
        "std_max": float(var.max().sqrt()),
    }


def empirical_ntk(
    model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, mode: str = "full", chunk: int | None = None
) -> torch.Tensor:
    """Empirical NTK ``J(x1) J(x2)^T`` of ``model`` w.r.t. all its trainable parameters (``torch.func``).

    Args:
        model: a module mapping a batch (n, ...) to (n,) or (n, o).
        x1, x2: input batches.
        mode: ``"full"`` -> (n1, n2, o, o); ``"trace"`` -> (n1, n2), the sum over output coordinates of the
            diagonal blocks; ``"mean"`` -> the trace divided by o (comparable to a per-output kernel).
        chunk: optional chunk size for ``vmap`` (memory).
    """
    check_choice("mode", mode, ("full", "trace", "mean"))
    check_module("model", model)
    check_tensor("x1", x1, finite=True)
    check_tensor("x2", x2, finite=True)
    if x1.ndim < 1 or x2.ndim < 1 or x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 must be batches (n, ...) of the same per-sample shape; got {tuple(x1.shape)} "
                         f"and {tuple(x2.shape)}")
    if chunk is not None:
        chunk = check_int("chunk", chunk, minimum=1)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters")

    def single(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (x.unsqueeze(0),))
        return out.reshape(-1)  # (o,)

    def jac(x: torch.Tensor) -> list[torch.Tensor]:
        j = vmap(jacrev(single), in_dims=(None, 0), chunk_size=chunk)(params, x)
        return [v.reshape(v.shape[0], v.shape[1], -1) for v in j.values()]  # (n, o, P_i)

    j1, j2 = jac(x1), jac(x2)
    if mode == "full":
        return sum(torch.einsum("naP,mbP->nmab", a, b) for a, b in zip(j1, j2))
    tr = sum(torch.einsum("naP,maP->nm", a, b) for a, b in zip(j1, j2))
    return tr / j1[0].shape[1] if mode == "mean" else tr


class TwoLayerNTKNet(nn.Module):
    """``f(x) = m^{-1/2} A ReLU(W x~)`` in NTK parameterisation (``W, A ~ N(0, 1)``), ``x~ = (x, bias)``."""

    def __init__(
        self, in_features: int, width: int, out_features: int, bias: float = 0.0, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.bias = check_positive("bias", bias, allow_zero=True)
        check_generator("generator", generator)
        d = self.in_features + (1 if self.bias > 0 else 0)
        self.weight = nn.Parameter(torch.randn(self.width, d, generator=generator))
        self.readout = nn.Parameter(torch.randn(self.out_features, self.width, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_features) -> (n, out_features)."""
        check_features("x", x, self.in_features, self.weight.dtype)
        h = F.relu(augment_bias(x, self.bias) @ self.weight.T)
        return h @ self.readout.T / math.sqrt(self.width)


class TwoLayerNTKEnsemble(nn.Module):
    """``E`` independent :class:`TwoLayerNTKNet` members stored as batched weights (E, m, d) and (E, o, m).

    ``forward(x)`` returns every member's output, shape (E, n, o); members never interact, so training the sum of
    their losses trains each one independently.
    """

    def __init__(
        self,
        num_members: int,
        in_features: int,
        width: int,
        out_features: int,
        bias: float = 0.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_members = check_int("num_members", num_members, minimum=1)
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.bias = check_positive("bias", bias, allow_zero=True)
        check_generator("generator", generator)
        check_float_dtype("dtype", dtype, allow_none=True)
        d = self.in_features + (1 if self.bias > 0 else 0)
        self.weight = nn.Parameter(torch.randn(self.num_members, self.width, d, generator=generator, dtype=dtype))
        self.readout = nn.Parameter(
            torch.randn(self.num_members, self.out_features, self.width, generator=generator, dtype=dtype)
        )

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """(n, in_features) -> (E, n, out_features) (or the members in ``members``)."""
        check_tensor("x", x, ndim=2, floating=True)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features; got {x.shape[1]}")
        check_data("x", x)
        if members is not None and not isinstance(members, slice):
            raise TypeError(f"members must be a slice or None; got {type(members).__name__}")
        sl = members if members is not None else slice(None)
        w, a = self.weight[sl], self.readout[sl]
        h = F.relu(torch.einsum("emd,nd->enm", w, augment_bias(x.to(w.dtype), self.bias)))
        return torch.einsum("enm,eom->eno", h, a) / math.sqrt(self.width)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """All members' outputs (E, n, o), computed ``chunk`` members at a time."""
        chunk = check_int("chunk", chunk, minimum=1)
        return torch.cat([self(x, slice(i, i + chunk)) for i in range(0, self.num_members, chunk)])

    def member(self, index: int) -> TwoLayerNTKNet:
        """A standalone copy of member ``index`` as a :class:`TwoLayerNTKNet`."""
        index = check_int("index", index, minimum=0, maximum=self.num_members - 1)
        net = TwoLayerNTKNet(self.in_features, self.width, self.out_features, bias=self.bias)
        with torch.no_grad():
            net.weight.copy_(self.weight[index])
            net.readout.copy_(self.readout[index])
        return net.to(self.weight.dtype)


def fit_ensemble(
    ensemble: TwoLayerNTKEnsemble,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float = 1.0,
    steps: int = 500,
    tol: float = 1e-6,
) -> float:
    """Full-batch GD on ``sum_e (1/n) sum_i |f_e(x_i) - y_i|^2 / 2`` (every member trained independently).

    In function space one step is ``f <- f - (lr / n) Theta (f - y)``, stable for ``lr < 2 n / lambda_max(Theta)``.
    Stops early once the largest absolute training residual over members is below ``tol``. The gradients are
    written out by hand for speed (no autograd graph over E members); the tests check them against autograd.

    Returns:
        The final largest absolute training residual.
    """
    if not isinstance(ensemble, TwoLayerNTKEnsemble):
        raise TypeError(f"ensemble must be a TwoLayerNTKEnsemble; got {type(ensemble).__name__}")
    lr = check_positive("lr", lr)
    steps = check_int("steps", steps, minimum=0)
    tol = check_positive("tol", tol, allow_zero=True)
    check_features("x", x, ensemble.in_features)
    check_tensor("y", y, ndim=2, floating=True, finite=True)
    if y.shape != (x.shape[0], ensemble.out_features):
        raise ValueError(f"y must have shape ({x.shape[0]}, {ensemble.out_features}); got {tuple(y.shape)}")
    y = y.to(ensemble.weight.dtype)
    xt = augment_bias(x.to(ensemble.weight.dtype), ensemble.bias).T  # (d, n)
    yt = y.T  # (o, n)
    n, scale = x.shape[0], 1.0 / math.sqrt(ensemble.width)
    w, a = ensemble.weight.data, ensemble.readout.data
    resid = math.inf
    for step in range(steps + 1):
        pre = w @ xt  # (E, m, n)
        h = pre.clamp_min(0.0)
        err = (a @ h) * scale - yt  # (E, o, n)
        resid = float(err.abs().max())
        if not math.isfinite(resid):
            raise FloatingPointError(f"training diverged; lower lr (got {lr})")
        if resid < tol or step == steps:
            break
        # hand-written backward of the loss above (all members at once)
        grad_a = err @ h.transpose(1, 2) * (scale / n)
        grad_pre = (a.transpose(1, 2) @ err) * (pre > 0) * (scale / n)
        w.sub_(grad_pre @ xt.T, alpha=lr)
        a.sub_(grad_a, alpha=lr)
    return resid


def round_outputs(mean: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Rounding step: 1 where ``mean > threshold`` (strict, so an exact 0 is a 0-bit), else 0."""
    check_tensor("mean", mean, finite=True)
    if mean.is_complex() or mean.dtype == torch.bool:
        raise TypeError(f"mean must be a real tensor; got dtype {mean.dtype}")
    check_real("threshold", threshold)
    return (mean > threshold).to(mean.dtype)


def exact_recovery_rate(
    member_outputs: torch.Tensor, targets: torch.Tensor, ensemble_sizes: Sequence[int], threshold: float = 0.0
) -> dict[str, list[float]]:
    """Exact-recovery rates of rounded ensemble means for each ensemble size M.

    The E members are split into ``E // M`` disjoint groups; each group's mean output is rounded.

    Returns:
        ``{"ensemble_size": [...], "per_input": [...], "all_inputs": [...]}``: the fraction of (group, input) pairs
        recovered exactly, and the fraction of groups that recover every input.
    """
    check_tensor("member_outputs", member_outputs, ndim=3, floating=True, finite=True)
    check_tensor("targets", targets, ndim=2)
    check_real("threshold", threshold)
    e = member_outputs.shape[0]
    if e < 1:
        raise ValueError(f"member_outputs must hold at least one member (shape (E>=1, n, o)); got "
                         f"{tuple(member_outputs.shape)}")
    ensemble_sizes = check_int_list("ensemble_sizes", ensemble_sizes, minimum=1, maximum=e)
    if targets.shape != member_outputs.shape[1:]:
        raise ValueError(f"targets must have shape {tuple(member_outputs.shape[1:])}; got {tuple(targets.shape)}")
    out: dict[str, list[float]] = {"ensemble_size": [], "per_input": [], "all_inputs": []}
    for m in ensemble_sizes:
        m = check_int("ensemble size", m, minimum=1, maximum=e)
        groups = member_outputs[: (e // m) * m].reshape(e // m, m, *member_outputs.shape[1:]).mean(1)
        exact = (round_outputs(groups, threshold) == targets.to(groups.dtype)).all(-1)  # (G, n)
        out["ensemble_size"].append(m)
        out["per_input"].append(float(exact.float().mean()))
        out["all_inputs"].append(float(exact.all(-1).float().mean()))
    return out
