"""Gradient-based attributions with one call shape: ``Method(model).attribute(inputs, target=..., **options)``.

Each class wraps the Captum implementation (Captum 0.9; imported lazily, so ``import gradlab.explain`` works
without it for the methods that do not need it) and makes the paper-faithful settings explicit where Captum's
defaults differ (research note §1):

* :class:`Saliency` -- the gradient g = d f_c / d x (Simonyan et al. 2014). Default ``abs=False`` (the signed
  gradient of the local-function-approximation view); Captum's default is ``abs=True``.
* :class:`InputXGradient` -- x * g (Shrikumar et al. 2016).
* :class:`IntegratedGradients` -- IG_i = (x_i - x'_i) int_0^1 d f(x' + a (x - x')) / d x_i da (Sundararajan et
  al. 2017), Gauss-Legendre quadrature with 50 nodes, zero baseline (Captum's defaults, stated explicitly).
* :class:`SmoothGrad` -- (1/n) sum_t A(x + eps_t), eps_t ~ N(0, sigma^2 I) (Smilkov et al. 2017) with the
  paper's settings: sigma = ``noise_level`` (default 0.15) times the input range x_max - x_min of each example,
  the *signed* gradient averaged (``abs=False``), a ``seed``; Captum's NoiseTunnel instead takes an absolute
  std (default 1.0) and averages |g| through Saliency's ``abs=True``. With the same seed and an absolute
  ``stdevs`` the noise equals NoiseTunnel's draw exactly, in every input dtype (the draw is made in the default
  dtype, as NoiseTunnel makes it, and cast to the input's dtype).
* :class:`GuidedBackprop` -- ReLU backward replaced by 1[z > 0] * ReLU(R) (Springenberg et al. 2015).
* :class:`DeepLift` -- the rescale rule m = (phi(z) - phi(z')) / (z - z') (Shrikumar et al. 2017), zero baseline.

Guarantees: the model must be in eval mode (``ValueError`` otherwise), it is never mutated (in-place
nonlinearities are handled on a deep copy), hooks are removed also when the model raises, and ``chunk_size``
bounds how many (expanded) rows go through the model at once.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from gradlab.core.validation import check_choice, check_int, check_positive, check_range, check_type
from gradlab.explain._common import (
    TargetType,
    as_result,
    check_chunk_size,
    check_inputs,
    check_model,
    chunk_slices,
    forward,
    hook_guard,
    input_gradients,
    normalize_target,
    select_output,
)
from gradlab.explain._structure import DEEPLIFT_MODULES, prepare_hooked_model


def _captum_attr():
    try:
        import captum.attr as ca
    except ImportError as err:  # pragma: no cover - captum is in the [explain] extra
        raise ImportError("this attribution method wraps Captum; install gradlab[explain] (pip install captum)") from err
    return ca


def expand_baselines(baselines: Any, inputs: torch.Tensor, name: str = "baselines") -> torch.Tensor:
    """Baselines as a tensor shaped like ``inputs``: ``None`` -> zeros, a number, one example or a full batch."""
    if baselines is None:
        return torch.zeros_like(inputs)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return torch.full_like(inputs, float(baselines))
    if not isinstance(baselines, torch.Tensor):
        raise TypeError(f"{name} must be None, a number or a tensor; got {type(baselines).__name__}")
    b = baselines.to(inputs.dtype)
    if b.shape == inputs.shape:
        return b
    if b.shape == inputs.shape[1:]:
        return b.unsqueeze(0).expand_as(inputs).clone()
    if b.ndim == inputs.ndim and b.shape[0] == 1 and b.shape[1:] == inputs.shape[1:]:
        return b.expand_as(inputs).clone()
    raise ValueError(f"{name} must have the shape of inputs {tuple(inputs.shape)} or of one example; got {tuple(b.shape)}")


class Attribution:
    """Base class: stores the model and implements the common checks; subclasses define ``attribute``."""

    requires_module: bool = False

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]):
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module or a function); got {type(model).__name__}")
        if self.requires_module and not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__} needs an nn.Module (it hooks layers); got {type(model).__name__}")
        self.model = model

    def _prepare(self, inputs: Any, target: TargetType, chunk_size: int | None) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
        check_model(self.model, require_module=self.requires_module)
        x = check_inputs(inputs, self.model).detach()
        t = normalize_target(target, x.shape[0])
        cs = check_chunk_size(chunk_size)
        # one probe forward pass on one example: a wrong input shape fails here with a clear ValueError, and the
        # target is checked against the number of outputs before any expensive work (hooks are guarded too)
        with torch.no_grad(), hook_guard(self.model):
            out = forward(self.model, x[:1])
        select_output(out, None if t is None else t.max().view(1))
        return x, t, cs


class Saliency(Attribution):
    """Vanilla gradient g = d f_c(x) / d x (Simonyan, Vedaldi, Zisserman 2014), wrapping ``captum.attr.Saliency``."""

    def attribute(
        self, inputs: torch.Tensor, target: TargetType = None, abs: bool = False, chunk_size: int | None = None
    ) -> torch.Tensor:
        """Return g (``abs=False``, the default here) or |g| (Captum's default) shaped like ``inputs``."""
        x, t, cs = self._prepare(inputs, target, chunk_size)
        check_type("abs", abs, bool)
        sal = _captum_attr().Saliency(self.model)
        out = []
        with hook_guard(self.model):
            for sl in chunk_slices(x.shape[0], cs):
                out.append(sal.attribute(x[sl], target=None if t is None else t[sl], abs=abs).detach())
        return torch.cat(out)


class InputXGradient(Attribution):
    """Gradient times input x * d f_c / d x (Shrikumar et al. 2016), wrapping ``captum.attr.InputXGradient``."""

    def attribute(self, inputs: torch.Tensor, target: TargetType = None, chunk_size: int | None = None) -> torch.Tensor:
        """Return x * g shaped like ``inputs``."""
        x, t, cs = self._prepare(inputs, target, chunk_size)
        ixg = _captum_attr().InputXGradient(self.model)
        out = []
        with hook_guard(self.model):
            for sl in chunk_slices(x.shape[0], cs):
                out.append(ixg.attribute(x[sl], target=None if t is None else t[sl]).detach())
        return torch.cat(out)


class IntegratedGradients(Attribution):
    """Integrated gradients (Sundararajan, Taly, Yan 2017), wrapping ``captum.attr.IntegratedGradients``.

    IG_i(x) = (x_i - x'_i) * int_0^1 d f_c(x' + a (x - x')) / d x_i da, approximated with ``n_steps`` nodes of
    ``method`` ('gausslegendre', 'riemann_trapezoid', 'riemann_left', 'riemann_right', 'riemann_middle').
    Completeness: sum_i IG_i = f_c(x) - f_c(x') up to the quadrature error (``return_convergence_delta``).
    """

    METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        baselines: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        chunk_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return IG shaped like ``inputs`` (and the completeness delta per example when asked).

        ``chunk_size`` is the number of path points (examples x steps) evaluated per forward pass.
        """
        x, t, cs = self._prepare(inputs, target, chunk_size)
        n_steps = check_int("n_steps", n_steps, minimum=1)
        check_choice("method", method, self.METHODS)
        b = expand_baselines(baselines, x)
        ig = _captum_attr().IntegratedGradients(self.model, multiply_by_inputs=True)
        per = x.shape[0] if cs is None else max(1, cs // n_steps)
        attrs, deltas = [], []
        with hook_guard(self.model):
            for sl in chunk_slices(x.shape[0], per):
                k = sl.stop - sl.start
                ibs = None if cs is None else max(cs, k)
                res = ig.attribute(
                    x[sl], baselines=b[sl], target=None if t is None else t[sl], n_steps=n_steps, method=method,
                    internal_batch_size=ibs, return_convergence_delta=return_convergence_delta,
                )
                if return_convergence_delta:
                    attrs.append(res[0].detach())
                    deltas.append(res[1].detach())
                else:
                    attrs.append(res.detach())
        a = torch.cat(attrs)
        return (a, torch.cat(deltas)) if return_convergence_delta else a


def _noise_std(x: torch.Tensor, noise_level: float | None, stdevs: float | None, value_range: Any) -> torch.Tensor:
    """Per-example noise std, shape (N,): absolute ``stdevs`` or ``noise_level`` x (x_max - x_min)."""
    n = x.shape[0]
    if stdevs is not None:
        if noise_level is not None:
            raise ValueError("give either noise_level (fraction of the input range) or stdevs (absolute), not both")
        s = check_positive("stdevs", stdevs, allow_zero=True)
        return torch.full((n,), s, dtype=x.dtype, device=x.device)
    level = 0.15 if noise_level is None else check_range("noise_level", noise_level, 0.0, 10.0, high_inclusive=True)
    if value_range is not None:
        if not (isinstance(value_range, (tuple, list)) and len(value_range) == 2):
            raise TypeError("value_range must be a pair (low, high)")
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(f"value_range must satisfy low < high; got {value_range}")
        return torch.full((n,), level * (hi - lo), dtype=x.dtype, device=x.device)
    flat = x.reshape(n, -1)
    return level * (flat.max(1).values - flat.min(1).values)


def draw_smoothgrad_noise(
    x: torch.Tensor, n_samples: int, std: torch.Tensor, seed: int | None
) -> torch.Tensor:
    """Noisy copies ``x.repeat_interleave(n_samples, 0) + N(0, std^2)`` drawn exactly as Captum's NoiseTunnel draws.

    The samples of one example are contiguous. The noise is drawn in PyTorch's *default* dtype
    (``torch.get_default_dtype()``), whatever the dtype of ``x``: NoiseTunnel builds its std tensor with
    ``torch.tensor(stdev)``, so its normal draw is in the default dtype, and the stream of random numbers (not only
    their precision) depends on that dtype. The noise is then cast to ``x.dtype`` before it is added, so with the
    same seed and an absolute std the noisy inputs equal NoiseTunnel's also for float64 (or float16) inputs. With
    ``seed`` the global RNG is forked (left untouched) and seeded.
    """
    shape = (x.shape[0] * n_samples,) + tuple(x.shape[1:])
    draw_dtype = torch.get_default_dtype()
    std_exp = (std.to(draw_dtype).repeat_interleave(n_samples).view((-1,) + (1,) * (x.ndim - 1))
               .expand(shape).contiguous())

    def draw() -> torch.Tensor:
        return torch.normal(0, std_exp).to(x.dtype)

    if seed is None:
        noise = draw()
    else:
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(check_int("seed", seed, minimum=0))
            noise = draw()
    return x.repeat_interleave(n_samples, dim=0) + noise


class SmoothGrad(Attribution):
    """SmoothGrad (Smilkov, Thorat, Kim, Viegas, Wattenberg 2017): average an attribution over noisy copies.

    SG(x) = (1/n) sum_{t=1..n} A(x + eps_t), eps_t ~ N(0, sigma^2 I), sigma = noise_level * (x_max - x_min).

    ``base`` is the attribution A: ``"saliency"`` (the gradient, the paper's SmoothGrad) or
    ``"input_x_gradient"``. ``nt_type``: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares) or
    ``"vargrad"`` (variance), as in Captum's NoiseTunnel.
    """

    BASES = ("saliency", "input_x_gradient")

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], base: str = "saliency"):
        super().__init__(model)
        self.base = check_choice("base", base, self.BASES)

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        n_samples: int = 50,
        noise_level: float | None = None,
        stdevs: float | None = None,
        value_range: tuple[float, float] | None = None,
        nt_type: str = "smoothgrad",
        abs: bool = False,
        seed: int | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Return the smoothed attribution shaped like ``inputs``.

        Args:
            n_samples: noisy copies per example (paper: about 50).
            noise_level: sigma as a fraction of the range x_max - x_min of each example (default 0.15; paper 10-20%),
                or of ``value_range`` when given.
            stdevs: an absolute sigma instead (Captum's convention); exclusive with ``noise_level``.
            abs: average |A| instead of A (Captum's Saliency default; not the original SmoothGrad).
            seed: seed for the noise (the global RNG is left as it was).
            chunk_size: noisy rows per forward/backward pass.
        """
        x, t, cs = self._prepare(inputs, target, chunk_size)
        n_samples = check_int("n_samples", n_samples, minimum=1)
        check_choice("nt_type", nt_type, ("smoothgrad", "smoothgrad_sq", "vargrad"))
        check_type("abs", abs, bool)
        std = _noise_std(x, noise_level, stdevs, value_range)
        noisy = draw_smoothgrad_noise(x, n_samples, std, seed)
        tt = None if t is None else t.repeat_interleave(n_samples)
        if self.base == "saliency":
            with hook_guard(self.model):
                a = Saliency(self.model).attribute(noisy, target=tt, abs=abs, chunk_size=cs)
        else:
            with hook_guard(self.model):
                a = InputXGradient(self.model).attribute(noisy, target=tt, chunk_size=cs)
            a = a.abs() if abs else a
        a = a.view((x.shape[0], n_samples) + tuple(x.shape[1:]))
        if nt_type == "smoothgrad":
            return a.mean(1)
        if nt_type == "smoothgrad_sq":
            return (a * a).mean(1)
        return (a * a).mean(1) - a.mean(1) ** 2


class GuidedBackprop(Attribution):
    """Guided backpropagation (Springenberg et al. 2015), wrapping ``captum.attr.GuidedBackprop``.

    Through every ReLU the backward signal is R_in = 1[z > 0] * ReLU(R_out). Captum hooks ``nn.ReLU`` modules
    only, so functional ReLUs (``F.relu``, ``x.relu()``) raise a ``ValueError`` here instead of silently falling
    back to the plain gradient; in-place ReLUs are handled on a copy of the model. A ReLU module used several
    times is fine (the rule is stateless; checked against a hand computation in the tests).
    """

    requires_module = True

    def attribute(self, inputs: torch.Tensor, target: TargetType = None, chunk_size: int | None = None) -> torch.Tensor:
        """Return the guided-backprop map shaped like ``inputs``."""
        x, t, cs = self._prepare(inputs, target, chunk_size)
        with hook_guard(self.model):
            model = prepare_hooked_model(self.model, x[:1], "guided backprop", (nn.ReLU,), relu_only=True,
                                         allow_reuse=True)
            gbp = _captum_attr().GuidedBackprop(model)
            with hook_guard(model):
                out = [
                    gbp.attribute(x[sl], target=None if t is None else t[sl]).detach()
                    for sl in chunk_slices(x.shape[0], cs)
                ]
        return torch.cat(out)


class DeepLift(Attribution):
    """DeepLIFT with the rescale rule (Shrikumar, Greenside, Kundaje 2017), wrapping ``captum.attr.DeepLift``.

    For y = phi(z) the multiplier is m = (phi(z) - phi(z')) / (z - z') (the gradient where |z - z'| < eps);
    multipliers chain through linear layers and attr = m_total * (x - x'), so sum(attr) = f(x) - f(x')
    (summation-to-delta). Reused nonlinearity modules, functional nonlinearities and nonlinear modules without a
    rule raise ``ValueError`` (Captum would return a wrong answer or an obscure error); in-place ones are handled
    on a copy.
    """

    requires_module = True

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        baselines: Any = None,
        eps: float = 1e-10,
        chunk_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return the DeepLIFT attribution shaped like ``inputs`` (and the summation-to-delta error if asked)."""
        x, t, cs = self._prepare(inputs, target, chunk_size)
        check_positive("eps", eps)
        b = expand_baselines(baselines, x)
        attrs, deltas = [], []
        with hook_guard(self.model):
            model = prepare_hooked_model(self.model, x[:1], "DeepLIFT", DEEPLIFT_MODULES, relu_only=False)
            dl = _captum_attr().DeepLift(model, multiply_by_inputs=True, eps=eps)
            with hook_guard(model):
                for sl in chunk_slices(x.shape[0], cs):
                    res = dl.attribute(
                        x[sl], baselines=b[sl], target=None if t is None else t[sl],
                        return_convergence_delta=return_convergence_delta,
                    )
                    if return_convergence_delta:
                        attrs.append(res[0].detach())
                        deltas.append(res[1].detach())
                    else:
                        attrs.append(res.detach())
        a = torch.cat(attrs)
        return (a, torch.cat(deltas)) if return_convergence_delta else a


def gradient(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, target: TargetType = None,
             chunk_size: int | None = None) -> torch.Tensor:
    """Plain autograd input gradient d f_c / d x without Captum (used by the local-approximation solver)."""
    check_model(model)
    x = check_inputs(inputs, model)
    return input_gradients(model, x.detach(), normalize_target(target, x.shape[0]), check_chunk_size(chunk_size))[0]


__all__ = [
    "Attribution", "Saliency", "InputXGradient", "IntegratedGradients", "SmoothGrad", "GuidedBackprop", "DeepLift",
    "expand_baselines", "draw_smoothgrad_noise", "gradient",
]
