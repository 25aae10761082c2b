"""Local function approximation (LFA): explanations as the best local surrogate, and C-LIME.

Han, Srinivas, Lakkaraju, "Which Explanation Should I Choose? A Function Approximation Perspective to
Characterizing Post Hoc Explanations" (NeurIPS 2022). An explanation of f at x0 is

    g* = argmin_{g in G} E_{xi ~ Z} [ pi(xi) * loss(f, g, x0, xi) ]

with G linear (g(xi) = w . xi + b), a neighbourhood Z that acts on x0 additively (x = x0 + xi) or
multiplicatively (x = x' + xi * (x0 - x'), baseline x' = 0 by default), and a loss

* ``"squared"``: (f(x(xi)) - g(xi))^2 weighted by a kernel pi (weighted least squares, closed form), or
* ``"gradient_matching"``: ||grad_xi f(x(xi)) - grad_xi g(xi)||^2, minimised by w = E_pi[grad_xi f(x(xi))].

The eight common methods are special cases (``LFA_PRESETS``; research note §3, table):

===================== ================================== ===================== ==========
method                neighbourhood Z                    loss / kernel         bias
===================== ================================== ===================== ==========
lime                  Bernoulli(0.5) masks, mult.        squared, exp kernel   free
kernelshap            Bernoulli(0.5) masks, mult.        squared, Shapley      free
occlusion             one-feature-removed masks, mult.   squared, constant     anchored
clime                 N(0, sigma^2 I), additive          squared, constant     free
smoothgrad            N(0, sigma^2 I), additive          gradient matching     --
gradient              the point xi = 0 (sigma -> 0)      gradient matching     --
integrated_gradients  xi = a 1, a ~ U(0, 1), mult.       gradient matching     --
gradient_x_input      xi = a 1, a ~ U(a0, 1), a0 -> 1    gradient matching     --
===================== ================================== ===================== ==========

"anchored" fixes g(1) = f(x0), so for the removal masks w_i = f(x0) - f(x0 with feature i removed), Captum's
occlusion with a window of one feature. The Shapley kernel is ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))`` with
weight 1e6 on the empty and full coalitions (as Captum and shap do). By Stein's lemma C-LIME's OLS solution on
Gaussian noise tends to SmoothGrad's as n -> infinity (E[xi f(x0 + xi)] = sigma^2 E[grad f(x0 + xi)]).

Features are the scalars of one example (flattened). Sampling uses a seeded ``torch.Generator``; the model is
evaluated in chunks of ``chunk_size`` rows.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from gradlab.core.validation import check_choice, check_int, check_positive, check_range
from gradlab.explain._common import (
    TargetType,
    check_bool,
    check_chunk_size,
    check_finite_tensor,
    check_inputs,
    check_model,
    check_real_tensor,
    chunk_slices,
    forward,
    hook_guard,
    input_gradients,
    normalize_target,
    select_output,
)
from gradlab.explain.gradients import Attribution, expand_baselines

# --------------------------------------------------------------------------------------------- neighbourhoods


@dataclass(frozen=True)
class GaussianNoise:
    """xi ~ N(0, sigma^2 I), acting additively: x = x0 + xi. ``sigma = 0`` is the single point xi = 0."""

    sigma: float = 0.1
    mode: str = "additive"

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma, allow_zero=True)

    def sample(self, n: int, d: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        if self.sigma == 0:
            return torch.zeros(1, d, dtype=dtype)
        return torch.randn(n, d, generator=generator, dtype=dtype) * self.sigma


@dataclass(frozen=True)
class BernoulliMasks:
    """xi ~ Bernoulli(p)^d (1 = keep), acting multiplicatively: x = x' + xi (x0 - x').

    ``exhaustive=True`` enumerates all 2^d masks (each weighted by its probability), for exact small-d answers;
    ``include_endpoints=True`` adds the empty and the full mask to a sample (KernelSHAP's efficiency constraint).
    """

    p: float = 0.5
    exhaustive: bool = False
    include_endpoints: bool = False
    mode: str = "multiplicative"

    def __post_init__(self) -> None:
        check_range("p", self.p, 0.0, 1.0, low_inclusive=False)
        check_bool("exhaustive", self.exhaustive)
        check_bool("include_endpoints", self.include_endpoints)

    def sample(self, n: int, d: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        if self.exhaustive:
            if d > 16:
                raise ValueError(f"exhaustive masks need d <= 16 features; got {d}")
            return torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=dtype)
        z = (torch.rand(n, d, generator=generator) < self.p).to(dtype)
        if self.include_endpoints:
            z = torch.cat([torch.zeros(1, d, dtype=dtype), torch.ones(1, d, dtype=dtype), z[: max(0, n - 2)]])
        return z

    def mass(self, xi: torch.Tensor) -> torch.Tensor:
        """Probability of each enumerated mask (used as a weight when ``exhaustive``)."""
        k = xi.sum(-1)
        d = xi.shape[-1]
        return (self.p ** k) * ((1 - self.p) ** (d - k))


@dataclass(frozen=True)
class OneHotRemoval:
    """The d masks that remove exactly one feature (xi = 1 - e_i), multiplicatively (occlusion, window 1)."""

    mode: str = "multiplicative"

    def sample(self, n: int, d: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        return 1 - torch.eye(d, dtype=dtype)


@dataclass(frozen=True)
class UniformScale:
    """xi = a * 1 with a ~ U(low, high), multiplicatively: the path x' + a (x0 - x') (IG; GxI when low = high = 1).

    ``quadrature=True`` (default) uses the midpoints of n equal cells instead of random a (Captum's
    'riemann_middle'), so the estimate is deterministic.
    """

    low: float = 0.0
    high: float = 1.0
    quadrature: bool = True
    mode: str = "multiplicative"

    def __post_init__(self) -> None:
        check_range("low", self.low, 0.0, 1.0, high_inclusive=True)
        check_range("high", self.high, 0.0, 1.0, high_inclusive=True)
        check_bool("quadrature", self.quadrature)
        if not self.low <= self.high:
            raise ValueError(f"UniformScale needs 0 <= low <= high <= 1; got low={self.low}, high={self.high}")

    def sample(self, n: int, d: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        if self.low == self.high:
            a = torch.full((1,), self.high, dtype=dtype)
        elif self.quadrature:
            a = self.low + (self.high - self.low) * (torch.arange(n, dtype=torch.float64) + 0.5).to(dtype) / n
        else:
            a = self.low + (self.high - self.low) * torch.rand(n, generator=generator, dtype=dtype)
        return a.view(-1, 1).expand(-1, d).clone()


Neighbourhood = GaussianNoise | BernoulliMasks | OneHotRemoval | UniformScale

# --------------------------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class ConstantKernel:
    """pi = 1."""

    def __call__(self, xi: torch.Tensor, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(xi.shape[:-1], dtype=torch.float64)


@dataclass(frozen=True)
class ExponentialKernel:
    """pi = exp(-||x0 - x||^2 / (2 width^2)) on the perturbed inputs (LIME with the Euclidean distance).

    ``width=None`` uses 0.75 sqrt(d), the lime package's tabular default.
    """

    width: float | None = None

    def __post_init__(self) -> None:
        if self.width is not None:
            check_positive("width", self.width)

    def __call__(self, xi: torch.Tensor, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        w = 0.75 * math.sqrt(xi.shape[-1]) if self.width is None else check_positive("width", self.width)
        d2 = ((x - x0.unsqueeze(-2)) ** 2).sum(-1).to(torch.float64)
        return torch.exp(-d2 / (2 * w * w))


@dataclass(frozen=True)
class ShapleyKernel:
    """``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))`` for binary z; ``endpoint_weight`` for ``|z|`` in {0, M}."""

    endpoint_weight: float = 1e6

    def __post_init__(self) -> None:
        check_positive("endpoint_weight", self.endpoint_weight)

    def __call__(self, xi: torch.Tensor, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        m = xi.shape[-1]
        k = xi.sum(-1).round().to(torch.float64)
        lg = torch.lgamma(torch.tensor(m + 1.0, dtype=torch.float64))
        log_binom = lg - torch.lgamma(k + 1) - torch.lgamma(m - k + 1)
        inner = (k > 0) & (k < m)
        safe_k = torch.where(inner, k, torch.ones_like(k))
        val = (m - 1) / (torch.exp(log_binom) * safe_k * (m - safe_k))
        return torch.where(inner, val, torch.full_like(val, self.endpoint_weight))


Kernel = ConstantKernel | ExponentialKernel | ShapleyKernel


@dataclass(frozen=True)
class LFASetting:
    """One point in the (neighbourhood, loss, kernel, bias) design space."""

    neighbourhood: Any
    loss: str = "squared"
    kernel: Any = ConstantKernel()
    bias: str = "free"

    def __post_init__(self) -> None:
        if not isinstance(self.neighbourhood, (GaussianNoise, BernoulliMasks, OneHotRemoval, UniformScale)):
            raise TypeError("setting.neighbourhood must be GaussianNoise, BernoulliMasks, OneHotRemoval or "
                            f"UniformScale; got {type(self.neighbourhood).__name__}")
        check_choice("setting.loss", self.loss, ("squared", "gradient_matching"))
        check_choice("setting.bias", self.bias, ("free", "none", "anchored"))
        if not callable(self.kernel):
            raise TypeError("setting.kernel must be a kernel pi(xi, x0, x) such as ConstantKernel(), "
                            f"ExponentialKernel() or ShapleyKernel(); got {type(self.kernel).__name__}")


def lfa_preset(method: str, sigma: float = 0.1, kernel_width: float | None = None, exhaustive: bool = False) -> LFASetting:
    """The LFA setting that reproduces ``method`` (one of ``LFA_METHODS``; see the module table)."""
    check_choice("method", method, LFA_METHODS)
    check_positive("sigma", sigma, allow_zero=True)
    if method == "lime":
        return LFASetting(BernoulliMasks(0.5, exhaustive), "squared", ExponentialKernel(kernel_width), "free")
    if method == "kernelshap":
        return LFASetting(BernoulliMasks(0.5, exhaustive, True), "squared", ShapleyKernel(), "free")
    if method == "occlusion":
        return LFASetting(OneHotRemoval(), "squared", ConstantKernel(), "anchored")
    if method == "clime":
        return LFASetting(GaussianNoise(sigma), "squared", ConstantKernel(), "free")
    if method == "smoothgrad":
        return LFASetting(GaussianNoise(sigma), "gradient_matching")
    if method == "gradient":
        return LFASetting(GaussianNoise(0.0), "gradient_matching")
    if method == "integrated_gradients":
        return LFASetting(UniformScale(0.0, 1.0), "gradient_matching")
    return LFASetting(UniformScale(1.0, 1.0), "gradient_matching")


LFA_METHODS: tuple[str, ...] = (
    "lime", "kernelshap", "occlusion", "clime", "smoothgrad", "gradient", "integrated_gradients", "gradient_x_input",
)

# --------------------------------------------------------------------------------------------- solver


def _model_scores(model: Callable, points: torch.Tensor, target: torch.Tensor | None, chunk_size: int | None) -> torch.Tensor:
    outs = []
    with torch.no_grad():
        for sl in chunk_slices(points.shape[0], chunk_size):
            outs.append(select_output(forward(model, points[sl]), None if target is None else target[sl]))
    return torch.cat(outs)


def weighted_least_squares(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, intercept: bool) -> torch.Tensor:
    """Batched argmin_beta sum_s w_s (y_s - z_s . beta [- b])^2 for z (N, n, d), y (N, n), w (N, n), in float64.

    Returns (N, d) coefficients (the intercept, if fitted, is dropped). Minimum-norm solution when rank deficient.
    """
    for name, t, nd in (("z", z, 3), ("y", y, 2), ("w", w, 2)):
        check_real_tensor(name, t)
        if t.ndim != nd:
            raise ValueError(f"{name} must have {nd} dimensions (N, n{', d' if nd == 3 else ''}); got shape "
                             f"{tuple(t.shape)}")
    if y.shape != z.shape[:2] or w.shape != z.shape[:2]:
        raise ValueError(f"y and w must have shape {tuple(z.shape[:2])} (the first two dimensions of z); got "
                         f"{tuple(y.shape)} and {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError("w (the sample weights) must be >= 0")
    check_bool("intercept", intercept)
    z = z.to(torch.float64)
    if intercept:
        z = torch.cat([z, torch.ones(z.shape[:-1] + (1,), dtype=torch.float64)], -1)
    sw = w.to(torch.float64).clamp(min=0).sqrt()
    sol = torch.linalg.lstsq((z * sw.unsqueeze(-1)), (y.to(torch.float64) * sw).unsqueeze(-1), driver="gelsd").solution
    sol = sol[..., 0]
    return sol[..., :-1] if intercept else sol


def _kernel_weights(setting: LFASetting, xi: torch.Tensor, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The kernel's weights (N, n): finite, >= 0 and not all zero for any example (else a ``ValueError``)."""
    pi = setting.kernel(xi, x0, x)
    if not isinstance(pi, torch.Tensor) or tuple(pi.shape) != tuple(xi.shape[:-1]):
        raise ValueError(f"setting.kernel must return one weight per sample, shape {tuple(xi.shape[:-1])}; got "
                         f"{tuple(pi.shape) if isinstance(pi, torch.Tensor) else type(pi).__name__}")
    check_finite_tensor("setting.kernel's weights", pi)
    if bool((pi < 0).any()):
        raise ValueError("setting.kernel's weights must be >= 0")
    dead = (pi.sum(1) == 0).nonzero().flatten().tolist()
    if dead:
        raise ValueError(f"setting.kernel gives weight 0 to every sample of example {dead[0]} (e.g. an "
                         "ExponentialKernel width far below the perturbation distances); the fit is undefined")
    return pi.to(x.device)


class LocalFunctionApproximation(Attribution):
    """The LFA solver: ``LocalFunctionApproximation(model).attribute(x, target, setting=lfa_preset("clime"))``."""

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        setting: LFASetting | str = "clime",
        n_samples: int = 1000,
        baselines: Any = None,
        seed: int | None = 0,
        chunk_size: int | None = None,
        sigma: float = 0.1,
    ) -> torch.Tensor:
        """Return the surrogate's coefficients w ``(N, *input shape)`` for each example.

        Args:
            setting: an :class:`LFASetting` or a method name from ``LFA_METHODS`` (then ``sigma`` is used).
            n_samples: neighbourhood samples per example (ignored by deterministic neighbourhoods).
            baselines: x' for multiplicative neighbourhoods (default 0).
            seed: seed of the sampling generator (``None``: a fresh random seed).
        """
        if isinstance(setting, str):
            check_choice("setting", setting, LFA_METHODS)
            setting = lfa_preset(setting, sigma=check_positive("sigma", sigma, allow_zero=True))
        if not isinstance(setting, LFASetting):
            raise TypeError(f"setting must be an LFASetting or a method name; got {type(setting).__name__}")
        x, t, cs = self._prepare(inputs, target, chunk_size, differentiable=setting.loss == "gradient_matching")
        n_samples = check_int("n_samples", n_samples, minimum=1)
        nb = setting.neighbourhood
        gen = torch.Generator()
        gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) if seed is None else check_int("seed", seed, minimum=0))
        n_ex = x.shape[0]
        shape = tuple(x.shape[1:])
        d = int(x[0].numel())
        x0 = x.reshape(n_ex, d)
        base = expand_baselines(baselines, x).reshape(n_ex, d)
        xi = torch.stack([nb.sample(n_samples, d, gen, x.dtype) for _ in range(n_ex)]).to(x.device)  # (N, n, d)
        n = xi.shape[1]
        unknowns = d + (setting.bias == "free")
        if setting.loss == "squared" and n < unknowns:
            raise ValueError(
                f"n_samples={n_samples} gives {n} neighbourhood samples per example, fewer than the {unknowns} "
                f"coefficients of the least-squares surrogate (d={d} features"
                f"{' + intercept' if unknowns > d else ''}); "
                f"the fit would be underdetermined. Use n_samples >= {unknowns}"
            )
        if nb.mode == "additive":
            pts = x0.unsqueeze(1) + xi
            dx_dxi = torch.ones_like(x0)
        else:
            pts = base.unsqueeze(1) + xi * (x0 - base).unsqueeze(1)
            dx_dxi = x0 - base
        flat_pts = pts.reshape((n_ex * n,) + shape)
        tt = None if t is None else t.repeat_interleave(n)
        with hook_guard(self.model):
            if setting.loss == "gradient_matching":
                grads, _ = input_gradients(self.model, flat_pts, tt, cs)
                gxi = grads.reshape(n_ex, n, d) * dx_dxi.unsqueeze(1)  # chain rule d f / d xi
                pi = _kernel_weights(setting, xi, x0, pts)
                wts = pi / pi.sum(1, keepdim=True)
                w = (gxi.to(torch.float64) * wts.unsqueeze(-1)).sum(1)
                return w.to(x.dtype).reshape((n_ex,) + shape)
            y = _model_scores(self.model, flat_pts, tt, cs).reshape(n_ex, n)
            pi = _kernel_weights(setting, xi, x0, pts)
            if isinstance(nb, BernoulliMasks) and nb.exhaustive:
                pi = pi * nb.mass(xi).to(pi)
            if setting.bias == "anchored":
                f0 = _model_scores(self.model, x, t, cs).view(n_ex, 1)
                anchor = 0.0 if nb.mode == "additive" else 1.0
                w = weighted_least_squares(xi - anchor, y - f0, pi, intercept=False)
            else:
                w = weighted_least_squares(xi, y, pi, intercept=setting.bias == "free")
        return w.to(x.dtype).reshape((n_ex,) + shape)


class CLime(Attribution):
    """C-LIME (continuous LIME; Han et al. 2022): OLS of f(x0 + xi) on xi ~ N(0, sigma^2 I) with an intercept.

    ``CLime(model).attribute(x, target, n_samples=1000, sigma=0.1)`` returns the slope w per example. For a linear
    model w equals its weights exactly; for a smooth model it tends to SmoothGrad's E[grad f(x0 + xi)].
    """

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        n_samples: int = 1000,
        sigma: float = 0.1,
        seed: int | None = 0,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Return the C-LIME coefficients shaped like ``inputs``."""
        check_positive("sigma", sigma)
        check_int("n_samples", n_samples, minimum=1)
        return LocalFunctionApproximation(self.model).attribute(
            inputs, target, setting=lfa_preset("clime", sigma=sigma), n_samples=n_samples, seed=seed,
            chunk_size=chunk_size,
        )


def lfa_explain(model: Callable, inputs: torch.Tensor, target: TargetType, method: str, **kwargs: Any) -> torch.Tensor:
    """Shorthand: ``LocalFunctionApproximation(model).attribute(inputs, target, setting=method, **kwargs)``."""
    check_model(model)
    check_inputs(inputs, model)
    normalize_target(target, inputs.shape[0])
    check_chunk_size(kwargs.get("chunk_size"))
    return LocalFunctionApproximation(model).attribute(inputs, target, setting=method, **kwargs)


__all__ = [
    "GaussianNoise", "BernoulliMasks", "OneHotRemoval", "UniformScale", "ConstantKernel", "ExponentialKernel",
    "ShapleyKernel", "LFASetting", "lfa_preset", "LFA_METHODS", "LocalFunctionApproximation", "CLime",
    "weighted_least_squares", "lfa_explain",
]
