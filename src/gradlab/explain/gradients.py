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
  std (default 1.0) and averages ``|g|`` through Saliency's ``abs=True``. With the same seed and an absolute
  ``stdevs`` the noise equals NoiseTunnel's draw exactly, in every input dtype (the draw is made in the default
  dtype, as NoiseTunnel makes it, and cast to the input's dtype).
* :class:`GuidedBackprop` -- ReLU backward replaced by 1[z > 0] * ReLU(R) (Springenberg et al. 2015).
* :class:`DeepLift` -- the rescale rule m = (phi(z) - phi(z')) / (z - z') (Shrikumar et al. 2017), zero baseline.

Guarantees: the model must be in eval mode (``ValueError`` otherwise), it is never mutated (in-place
nonlinearities are handled on a deep copy), hooks are removed also when the model raises, and ``chunk_size``
bounds how many (expanded) rows go through the model at once.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn

from gradlab.core.validation import check_choice, check_int, check_positive, check_range
from gradlab.explain._common import (
    TargetType,
    as_result,
    autograd_errors,
    check_attribution,
    check_bool,
    check_chunk_size,
    check_inputs,
    check_model,
    check_number,
    check_pair,
    check_real_tensor,
    chunk_slices,
    hook_guard,
    input_gradients,
    normalize_target,
    probe_model,
    watch_outputs,
)
from gradlab.explain._inputs import (
    InputsType,
    as_inputs,
    captum_target,
    check_input_tuple,
    expand_args,
    format_additional_args,
    merge_chunks,
    normalize_captum_target,
    probe_call,
    slice_args,
    slice_inputs,
)
from gradlab.explain._structure import DEEPLIFT_MODULES, prepare_hooked_model


def _captum_attr():
    try:
        import captum.attr as ca
    except ImportError as err:  # pragma: no cover - captum is in the [explain] extra
        raise ImportError("this attribution method wraps Captum; install gradlab[explain] (pip install captum)") from err
    return ca


def expand_baselines(baselines: Any, inputs: torch.Tensor, name: str = "baselines") -> torch.Tensor:
    """Baselines as a tensor shaped like ``inputs``: ``None`` -> zeros, a number, one example or a full batch.

    Baselines must be finite and real (a real tensor of another dtype is cast to the inputs' dtype).
    """
    if baselines is None:
        return torch.zeros_like(inputs)
    if not isinstance(baselines, torch.Tensor):
        if isinstance(baselines, bool) or not isinstance(baselines, (int, float)):
            raise TypeError(f"{name} must be None, a number or a tensor; got {type(baselines).__name__}")
        return torch.full_like(inputs, check_number(name, baselines))
    b = check_real_tensor(name, baselines).detach().to(inputs.dtype)
    if b.shape == inputs.shape:
        return b
    if b.shape == inputs.shape[1:]:
        return b.unsqueeze(0).expand_as(inputs).clone()
    if b.ndim == inputs.ndim and b.shape[0] == 1 and b.shape[1:] == inputs.shape[1:]:
        return b.expand_as(inputs).clone()
    raise ValueError(
        f"{name} must have the shape of inputs {tuple(inputs.shape)} (the same batch size {inputs.shape[0]}) or of "
        f"one example {tuple(inputs.shape[1:])}; got {tuple(b.shape)}"
    )


def expand_baselines_for(baselines: Any, xs: tuple[torch.Tensor, ...], is_tuple: bool,
                         name: str = "baselines") -> tuple[torch.Tensor, ...]:
    """Baselines per input (:func:`expand_baselines` each), as Captum takes them.

    For a single tensor input, ``baselines`` is what :func:`expand_baselines` accepts; for a tuple of inputs it
    is ``None`` (zeros) or a tuple with one entry per input (each ``None``, a number or a tensor shaped like that
    input or like one of its examples); errors name ``baselines[i]``.
    """
    if not is_tuple:
        return (expand_baselines(baselines, xs[0], name),)
    if baselines is None:
        return tuple(torch.zeros_like(x) for x in xs)
    if not isinstance(baselines, tuple):
        raise TypeError(f"{name} for a tuple of {len(xs)} inputs must be None or a tuple of {len(xs)} baselines (one "
                        f"per input: None, a number or a tensor); got {type(baselines).__name__}")
    if len(baselines) != len(xs):
        raise ValueError(f"{name} must give one baseline per input: {len(xs)} inputs, got {len(baselines)}")
    return tuple(expand_baselines(b, x, f"{name}[{i}]") for i, (b, x) in enumerate(zip(baselines, xs)))


def probe_example(xs: tuple[torch.Tensor, ...], args: tuple | None, is_tuple: bool) -> Any:
    """The first example as the model takes it: one tensor, or a tuple ``(*inputs, *additional_forward_args)``."""
    if not is_tuple and args is None:
        return xs[0][:1]
    return tuple(x[:1] for x in xs) + tuple(slice_args(args, slice(0, 1)) or ())


def _guarded(method: Callable) -> Callable:
    """Wrap ``attribute``: autograd's no-gradient errors become a clear ``ValueError``, non-finite results raise."""

    @functools.wraps(method)
    def attribute(self, *args: Any, **kwargs: Any) -> Any:
        with autograd_errors(self.gradient_wrt):
            result = method(self, *args, **kwargs)
        return check_attribution(result, type(self).__name__, self.gradient_wrt)

    attribute.__wrapped_by_guard__ = True
    return attribute


class Attribution:
    """Base class: stores the model and implements the common checks; subclasses define ``attribute``.

    Every subclass's ``attribute`` is wrapped (``_guarded``), so all methods share one policy: arguments are
    checked up front (``_prepare``: model, inputs, target, chunk size, and one probe pass on one example that
    checks the model's output and, for gradient methods, that it depends differentiably on the inputs), every
    output of the model is checked while the method runs, and a non-finite attribution raises.
    """

    requires_module: bool = False
    needs_input_gradient: bool = True
    """Whether the method differentiates the model's output with respect to the inputs."""
    gradient_wrt: str = "`inputs`"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fn = cls.__dict__.get("attribute")
        if fn is not None and not getattr(fn, "__wrapped_by_guard__", False):
            cls.attribute = _guarded(fn)

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]):
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module or a function); got {type(model).__name__}")
        if self.requires_module and not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__} needs an nn.Module (it hooks layers); got {type(model).__name__}")
        self.model = model

    def _prepare(self, inputs: Any, target: TargetType, chunk_size: int | None,
                 differentiable: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
        check_model(self.model, require_module=self.requires_module)
        x = check_inputs(inputs, self.model).detach()
        t = normalize_target(target, x.shape[0])
        cs = check_chunk_size(chunk_size)
        # one probe pass on one example: a wrong input shape fails here with a clear ValueError, the output is
        # checked (a tensor, one row per input, finite), the target against the number of outputs, and for
        # gradient methods the gradient path to the inputs -- all before any expensive work (hooks are guarded)
        diff = self.needs_input_gradient if differentiable is None else differentiable
        probe_model(self.model, x[:1], t, diff)
        return x, t, cs

    def _prepare_call(self, inputs: Any, target: Any, chunk_size: int | None, additional_forward_args: Any = None,
                      differentiable: bool | None = None
                      ) -> tuple[tuple[torch.Tensor, ...], bool, torch.Tensor | None, int | None, tuple | None]:
        """``_prepare`` for Captum's full call shape (:mod:`gradlab.explain._inputs`).

        Returns (the inputs as a tuple, whether a tuple was given, the target as (N,) or (N, k) indices, the chunk
        size, the additional forward args as a tuple or ``None``); the probe pass runs on the first example of
        every input with the matching rows of the additional arguments.
        """
        check_model(self.model, require_module=self.requires_module)
        xs, is_tuple = check_input_tuple(inputs, self.model)
        n = xs[0].shape[0]
        t = normalize_captum_target(target, n)
        cs = check_chunk_size(chunk_size)
        args = format_additional_args(additional_forward_args, n)
        diff = self.needs_input_gradient if differentiable is None else differentiable
        probe_call(self.model, xs, args, t, diff)
        return xs, is_tuple, t, cs, args


class Saliency(Attribution):
    """Vanilla gradient g = d f_c(x) / d x (Simonyan, Vedaldi, Zisserman 2014), wrapping ``captum.attr.Saliency``."""

    def attribute(
        self, inputs: InputsType, target: TargetType = None, abs: bool = False, chunk_size: int | None = None,
        additional_forward_args: Any = None,
    ) -> InputsType:
        """Return g (``abs=False``, the default here) or ``|g|`` (Captum's default) shaped like ``inputs``."""
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        check_bool("abs", abs)
        out = []
        with hook_guard(self.model), watch_outputs(self.model, True) as f:
            sal = _captum_attr().Saliency(f)
            for sl in chunk_slices(xs[0].shape[0], cs):
                out.append(sal.attribute(slice_inputs(xs, sl, is_tuple), target=captum_target(t, sl), abs=abs,
                                         additional_forward_args=slice_args(args, sl)))
        return merge_chunks(out, is_tuple, False)


class InputXGradient(Attribution):
    """Gradient times input x * d f_c / d x (Shrikumar et al. 2016), wrapping ``captum.attr.InputXGradient``."""

    def attribute(self, inputs: InputsType, target: TargetType = None, chunk_size: int | None = None,
                  additional_forward_args: Any = None) -> InputsType:
        """Return x * g shaped like ``inputs`` (a tuple of attributions for a tuple of inputs)."""
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        out = []
        with hook_guard(self.model), watch_outputs(self.model, True) as f:
            ixg = _captum_attr().InputXGradient(f)
            for sl in chunk_slices(xs[0].shape[0], cs):
                out.append(ixg.attribute(slice_inputs(xs, sl, is_tuple), target=captum_target(t, sl),
                                         additional_forward_args=slice_args(args, sl)))
        return merge_chunks(out, is_tuple, False)


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
        additional_forward_args: Any = None,
    ) -> Any:
        """Return IG shaped like ``inputs`` (and the completeness delta per example when asked).

        ``chunk_size`` is the number of path points (examples x steps) evaluated per forward pass. A tuple of
        inputs gives a tuple of attributions (``baselines`` then one per input); ``additional_forward_args`` are
        passed to the model after the inputs and repeated along every integration step, as in Captum.
        """
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        n_steps = check_int("n_steps", n_steps, minimum=1)
        check_choice("method", method, self.METHODS)
        if method == "riemann_trapezoid" and n_steps < 2:
            raise ValueError(f"n_steps must be >= 2 for method='riemann_trapezoid' (it needs both end points); got "
                             f"{n_steps}")
        check_bool("return_convergence_delta", return_convergence_delta)
        b = expand_baselines_for(baselines, xs, is_tuple)
        n = xs[0].shape[0]
        per = n if cs is None else max(1, cs // n_steps)
        parts = []
        with hook_guard(self.model), watch_outputs(self.model, True) as f:
            ig = _captum_attr().IntegratedGradients(f, multiply_by_inputs=True)
            for sl in chunk_slices(n, per):
                k = sl.stop - sl.start
                ibs = None if cs is None else max(cs, k)
                parts.append(ig.attribute(
                    slice_inputs(xs, sl, is_tuple), baselines=slice_inputs(b, sl, is_tuple),
                    target=captum_target(t, sl), additional_forward_args=slice_args(args, sl), n_steps=n_steps,
                    method=method, internal_batch_size=ibs, return_convergence_delta=return_convergence_delta,
                ))
        return merge_chunks(parts, is_tuple, return_convergence_delta)


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
        lo, hi = check_pair("value_range", value_range)
        return torch.full((n,), level * (hi - lo), dtype=x.dtype, device=x.device)
    flat = x.reshape(n, -1)
    return level * (flat.max(1).values - flat.min(1).values)


def _noise_stds(xs: tuple[torch.Tensor, ...], is_tuple: bool, noise_level: Any, stdevs: Any,
                value_range: Any) -> tuple[torch.Tensor, ...]:
    """:func:`_noise_std` per input. For a tuple of inputs each option is one value for all inputs or a tuple
    with one value per input (``stdevs`` as in NoiseTunnel; ``value_range`` a pair or a tuple of pairs)."""
    k = len(xs)

    def per(name: str, v: Any, pair: bool = False) -> list:
        if is_tuple and isinstance(v, tuple) and (not pair or (len(v) > 0 and isinstance(v[0], (tuple, list)))):
            if len(v) != k:
                raise ValueError(f"{name} as a tuple gives one value per input: {k} inputs, got {len(v)} values")
            return list(v)
        return [v] * k

    return tuple(_noise_std(x, a, b, c) for x, a, b, c in
                 zip(xs, per("noise_level", noise_level), per("stdevs", stdevs), per("value_range", value_range, True)))


def draw_smoothgrad_noise(
    x: InputsType, n_samples: int, std: torch.Tensor | tuple[torch.Tensor, ...], seed: int | None
) -> InputsType:
    """Noisy copies ``x.repeat_interleave(n_samples, 0) + N(0, std^2)`` drawn exactly as Captum's NoiseTunnel draws.

    The samples of one example are contiguous. The noise is drawn in PyTorch's *default* dtype
    (``torch.get_default_dtype()``), whatever the dtype of ``x``: NoiseTunnel builds its std tensor with
    ``torch.tensor(stdev)``, so its normal draw is in the default dtype, and the stream of random numbers (not only
    their precision) depends on that dtype. The noise is then cast to ``x.dtype`` before it is added, so with the
    same seed and an absolute std the noisy inputs equal NoiseTunnel's also for float64 (or float16) inputs. With
    ``seed`` the global RNG is forked (left untouched) and seeded.

    A tuple of inputs (with a tuple of stds, one per input) gives a tuple of noisy inputs, drawn one input after
    the other from the same stream, as NoiseTunnel draws them.
    """
    multi = isinstance(x, tuple)
    xs = x if multi else (x,)
    if multi and not xs:
        raise ValueError("x is an empty tuple; give a tensor or a tuple of tensors")
    for i, xi in enumerate(xs):
        check_inputs(xi, name=f"x[{i}]" if multi else "x")
    n_samples = check_int("n_samples", n_samples, minimum=1)
    if multi and (not isinstance(std, tuple) or len(std) != len(xs)):
        raise ValueError(f"std must be a tuple of {len(xs)} tensors (one per input) for a tuple x; got "
                         f"{type(std).__name__}{'' if not isinstance(std, tuple) else f' of length {len(std)}'}")
    stds = std if multi else (std,)
    std_exps = []
    for i, (xi, si) in enumerate(zip(xs, stds)):
        name = f"std[{i}]" if multi else "std"
        if not isinstance(si, torch.Tensor) or si.shape != (xi.shape[0],):
            raise ValueError(f"{name} must be a tensor of shape ({xi.shape[0]},) (one noise std per example); got "
                             f"{tuple(si.shape) if isinstance(si, torch.Tensor) else type(si).__name__}")
        check_real_tensor(name, si)
        if bool((si < 0).any()):
            raise ValueError(f"{name} must be >= 0; got {float(si.min())}")
        shape = (xi.shape[0] * n_samples,) + tuple(xi.shape[1:])
        draw_dtype = torch.get_default_dtype()
        std_exps.append(si.to(draw_dtype).repeat_interleave(n_samples).view((-1,) + (1,) * (xi.ndim - 1))
                        .expand(shape).contiguous())

    def draw() -> list[torch.Tensor]:
        return [torch.normal(0, se).to(xi.dtype) for se, xi in zip(std_exps, xs)]

    if seed is None:
        noise = draw()
    else:
        devices = [xs[0].device.index or 0] if xs[0].device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(check_int("seed", seed, minimum=0))
            noise = draw()
    noisy = tuple(xi.repeat_interleave(n_samples, dim=0) + e for xi, e in zip(xs, noise))
    return noisy if multi else noisy[0]


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
        additional_forward_args: Any = None,
    ) -> InputsType:
        """Return the smoothed attribution shaped like ``inputs`` (a tuple of them for a tuple of inputs).

        Args:
            n_samples: noisy copies per example (paper: about 50).
            noise_level: sigma as a fraction of the range x_max - x_min of each example (default 0.15; paper 10-20%),
                or of ``value_range`` when given.
            stdevs: an absolute sigma instead (Captum's convention); exclusive with ``noise_level``.
            abs: average ``|A|`` instead of A (Captum's Saliency default; not the original SmoothGrad).
            seed: seed for the noise (the global RNG is left as it was).
            chunk_size: noisy rows per forward/backward pass.
            additional_forward_args: passed to the model after the inputs, not attributed; per-example tensors are
                repeated for every noisy copy (as NoiseTunnel repeats them).

        For a tuple of inputs every input gets its own noise (drawn one input after the other, as NoiseTunnel
        draws it); ``noise_level``, ``stdevs`` and ``value_range`` may then be tuples with one value per input.
        """
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        n_samples = check_int("n_samples", n_samples, minimum=1)
        check_choice("nt_type", nt_type, ("smoothgrad", "smoothgrad_sq", "vargrad"))
        check_bool("abs", abs)
        stds = _noise_stds(xs, is_tuple, noise_level, stdevs, value_range)
        noisy = draw_smoothgrad_noise(as_inputs(xs, is_tuple), n_samples, as_inputs(stds, is_tuple), seed)
        tt = None if t is None else t.repeat_interleave(n_samples, dim=0)
        ea = expand_args(args, n_samples)
        if self.base == "saliency":
            with hook_guard(self.model):
                a = Saliency(self.model).attribute(noisy, target=captum_target(tt), abs=abs, chunk_size=cs,
                                                   additional_forward_args=ea)
        else:
            with hook_guard(self.model):
                a = InputXGradient(self.model).attribute(noisy, target=captum_target(tt), chunk_size=cs,
                                                        additional_forward_args=ea)
            a = tuple(p.abs() for p in a) if is_tuple and abs else (a.abs() if abs else a)
        parts = a if is_tuple else (a,)
        res = []
        for p, x in zip(parts, xs):
            p = p.view((x.shape[0], n_samples) + tuple(x.shape[1:]))
            if nt_type == "smoothgrad":
                res.append(p.mean(1))
            elif nt_type == "smoothgrad_sq":
                res.append((p * p).mean(1))
            else:
                res.append((p * p).mean(1) - p.mean(1) ** 2)
        return tuple(res) if is_tuple else res[0]


class GuidedBackprop(Attribution):
    """Guided backpropagation (Springenberg et al. 2015), wrapping ``captum.attr.GuidedBackprop``.

    Through every ReLU the backward signal is R_in = 1[z > 0] * ReLU(R_out). Captum hooks ``nn.ReLU`` modules
    only, so functional ReLUs (``F.relu``, ``x.relu()``) raise a ``ValueError`` here instead of silently falling
    back to the plain gradient; in-place ReLUs are handled on a copy of the model. A ReLU module used several
    times is fine (the rule is stateless; checked against a hand computation in the tests).
    """

    requires_module = True

    def attribute(self, inputs: InputsType, target: TargetType = None, chunk_size: int | None = None,
                  additional_forward_args: Any = None) -> InputsType:
        """Return the guided-backprop map shaped like ``inputs`` (a tuple of maps for a tuple of inputs)."""
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        with hook_guard(self.model):
            model = prepare_hooked_model(self.model, probe_example(xs, args, is_tuple), "guided backprop", (nn.ReLU,),
                                         relu_only=True, allow_reuse=True)
            with hook_guard(model), watch_outputs(model, True):
                gbp = _captum_attr().GuidedBackprop(model)
                out = [
                    gbp.attribute(slice_inputs(xs, sl, is_tuple), target=captum_target(t, sl),
                                  additional_forward_args=slice_args(args, sl))
                    for sl in chunk_slices(xs[0].shape[0], cs)
                ]
        return merge_chunks(out, is_tuple, False)


class DeepLift(Attribution):
    """DeepLIFT with the rescale rule (Shrikumar, Greenside, Kundaje 2017), wrapping ``captum.attr.DeepLift``.

    For y = phi(z) the multiplier is m = (phi(z) - phi(z')) / (z - z') (the gradient where ``|z - z'| < eps``);
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
        additional_forward_args: Any = None,
    ) -> Any:
        """Return the DeepLIFT attribution shaped like ``inputs`` (and the summation-to-delta error if asked).

        A tuple of inputs gives a tuple of attributions (``baselines`` then one per input).
        """
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        check_positive("eps", eps)
        check_bool("return_convergence_delta", return_convergence_delta)
        b = expand_baselines_for(baselines, xs, is_tuple)
        parts = []
        with hook_guard(self.model):
            model = prepare_hooked_model(self.model, probe_example(xs, args, is_tuple), "DeepLIFT", DEEPLIFT_MODULES,
                                         relu_only=False)
            with hook_guard(model), watch_outputs(model, True):
                dl = _captum_attr().DeepLift(model, multiply_by_inputs=True, eps=eps)
                for sl in chunk_slices(xs[0].shape[0], cs):
                    parts.append(dl.attribute(
                        slice_inputs(xs, sl, is_tuple), baselines=slice_inputs(b, sl, is_tuple),
                        target=captum_target(t, sl), additional_forward_args=slice_args(args, sl),
                        return_convergence_delta=return_convergence_delta,
                    ))
        return merge_chunks(parts, is_tuple, return_convergence_delta)


def gradient(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, target: TargetType = None,
             chunk_size: int | None = None) -> torch.Tensor:
    """Plain autograd input gradient d f_c / d x without Captum (used by the local-approximation solver).

    Same checks and NaN/inf policy as the attribution classes (it is :class:`Saliency` without Captum).
    """
    check_model(model)
    x = check_inputs(inputs, model).detach()
    t = normalize_target(target, x.shape[0])
    cs = check_chunk_size(chunk_size)
    probe_model(model, x[:1], t, True)
    with hook_guard(model), autograd_errors():
        g = input_gradients(model, x, t, cs)[0]
    return check_attribution(g, "gradient")


__all__ = [
    "Attribution", "Saliency", "InputXGradient", "IntegratedGradients", "SmoothGrad", "GuidedBackprop", "DeepLift",
    "expand_baselines", "expand_baselines_for", "draw_smoothgrad_noise", "gradient", "probe_example",
]
