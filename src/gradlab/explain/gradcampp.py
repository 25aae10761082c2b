"""Grad-CAM++ (Chattopadhyay et al. 2018) and Smooth Grad-CAM++ (Omeiza, Speakman, Cintas, Weldemariam 2019).

Notation: A^k_ij are the activations of a convolutional layer (channel k, position (i, j)), S the class score
(pre-softmax) and g = dS/dA. Grad-CAM++ explains Y = exp(S) with pixel-wise weights

    alpha^k_ij = d2Y/dA^2 / ( 2 d2Y/dA^2 + sum_ab A^k_ab d3Y/dA^3 ),      w_k = sum_ij alpha^k_ij ReLU(dY/dA^k_ij),
    L = ReLU(sum_k w_k A^k).

When S is piecewise linear in A (a ReLU/linear head) the derivatives of Y are e^S g, e^S g^2 and e^S g^3, so

    alpha = g^2 / (2 g^2 + g^3 sum_ab A_ab)

(the third derivative at (i, j) times the *sum* of the map, as in the official code and pytorch-grad-cam; torch-cam
instead sums A g^3 -- research note §6). The common factor e^S only rescales w and is dropped, as every public
implementation does. Where the denominator is 0 (g = 0) alpha is 0.

Smooth Grad-CAM++ averages the derivatives over noisy copies x_t = x + N(0, sigma^2 I) before forming the weights:
D^p = (1/n) sum_t g(x_t)^p for p = 1, 2, 3, alpha = D^2 / (2 D^2 + sum_ab A_ab D^3), w_k = sum_ij alpha ReLU(D^1),
with A from the clean input. It can be restricted to a subset of feature maps (k) or of neurons (units (k, i, j)).
With one sample and sigma = 0 it equals Grad-CAM++ exactly.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from gradlab.core.validation import check_choice, check_int
from gradlab.explain._common import (
    TargetType,
    check_binary_mask,
    check_bool,
    check_finite_tensor,
    check_int_sequence,
    chunk_slices,
    grad_wrt,
    hook_guard,
)
from gradlab.explain.gradcam import LAYER_WRT, check_layer, layer_not_called, probe_layer, upsample_map
from gradlab.explain._inputs import (
    InputsType,
    as_inputs,
    call_model,
    expand_args,
    select_target,
    slice_args,
    slice_inputs,
)
from gradlab.explain.gradients import Attribution, _noise_stds, draw_smoothgrad_noise, probe_example


def layer_activations_and_gradients(
    model: nn.Module,
    layer: nn.Module,
    inputs: InputsType,
    target: torch.Tensor | None,
    chunk_size: int | None = None,
    attribute_to_layer_input: bool = False,
    additional_forward_args: tuple | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's activations A and g = d f_target / d A for every row, in chunks (hooks always removed).

    ``inputs`` is a tensor or a tuple of tensors (the model is called as ``model(*inputs,
    *additional_forward_args)``, per-example tensors of the additional args sliced with the chunks); ``target``
    holds (N,) or (N, k) output indices.
    """
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    acts, grads = [], []
    for sl in chunk_slices(xs[0].shape[0], chunk_size):
        store: dict[str, Any] = {}

        def hook(mod, args, out):
            t = args[0] if attribute_to_layer_input else out
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"layer's {'input' if attribute_to_layer_input else 'output'} must be a tensor; "
                                f"got {type(t).__name__}")
            store["a"], store["v"] = t, t._version

        xc = [x[sl].detach().clone().requires_grad_(True) for x in xs]
        with hook_guard(model):
            handle = layer.register_forward_hook(hook)
            try:
                with torch.enable_grad():
                    s = select_target(call_model(model, xc, slice_args(additional_forward_args, sl), differentiable=True),
                                      None if target is None else target[sl])
            finally:
                handle.remove()
            if "a" not in store:
                raise layer_not_called(model, layer)
            a = store["a"]
            if a._version != store["v"]:
                raise ValueError(
                    "the layer's output is modified in place later in the forward pass (e.g. ReLU(inplace=True)); "
                    "choose the module after the in-place op as the layer"
                )
            g = grad_wrt(s, a, LAYER_WRT)
        acts.append(a.detach())
        grads.append(g.detach())
    return torch.cat(acts), torch.cat(grads)


def _unit_mask(feature_maps: Sequence[int] | None, neurons: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    """A 0/1 mask over units (K, h, w) from a channel subset and/or a neuron (unit or position) mask."""
    k = shape[0]
    mask = None
    if feature_maps is not None:
        idx = list(check_int_sequence("feature_maps", feature_maps, 0, k - 1))
        if not idx:
            raise ValueError("feature_maps must name at least one channel")
        mask = torch.zeros(shape)
        mask[idx] = 1.0
    if neurons is not None:
        if not isinstance(neurons, torch.Tensor):
            raise TypeError(f"neurons must be a boolean tensor of shape {tuple(shape[1:])} or {tuple(shape)}; got "
                            f"{type(neurons).__name__}")
        nm = check_binary_mask("neurons", neurons).to(torch.float32)
        if tuple(nm.shape) == tuple(shape[1:]):
            nm = nm.unsqueeze(0).expand(shape)
        if tuple(nm.shape) != tuple(shape):
            raise ValueError(f"neurons must have shape {tuple(shape[1:])} or {tuple(shape)}; got {tuple(neurons.shape)}")
        if not bool(nm.any()):
            raise ValueError("neurons selects no unit")
        mask = nm.clone() if mask is None else mask * nm
    return mask


def gradcampp_map(
    acts: torch.Tensor,
    d1: torch.Tensor,
    d2: torch.Tensor,
    d3: torch.Tensor,
    unit_mask: torch.Tensor | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """The Grad-CAM++ map from activations A (N, K, h, w) and the (averaged) derivatives g, g^2, g^3.

    alpha = D2 / (2 D2 + sum_ab A_ab D3) (0 where the denominator is 0), w_k = sum_ij alpha ReLU(D1),
    L = [ReLU](sum_k w_k A^k), optionally restricted to the units in ``unit_mask``. Returns (N, 1, h, w).
    """
    for name, t in (("acts", acts), ("d1", d1), ("d2", d2), ("d3", d3)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor")
        if t.shape != acts.shape or t.ndim < 3:
            raise ValueError(f"{name} must have the activations' shape (N, K, h, ...) {tuple(acts.shape)}; got "
                             f"{tuple(t.shape)}")
        check_finite_tensor(name, t)
    spatial = tuple(range(2, acts.ndim))
    sum_a = acts.sum(dim=spatial, keepdim=True)
    denom = 2 * d2 + sum_a * d3
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    alpha = torch.where(denom != 0, d2 / safe, torch.zeros_like(denom))
    contrib = alpha * d1.clamp(min=0)
    a = acts
    if unit_mask is not None:
        um = unit_mask.to(acts.device, acts.dtype).unsqueeze(0)
        contrib = contrib * um
        a = acts * um
    w = contrib.sum(dim=spatial, keepdim=True)
    cam = (w * a).sum(1, keepdim=True)
    return cam.clamp(min=0) if relu else cam


class _CamBase(Attribution):
    requires_module = True
    needs_input_gradient = False  # the gradient is taken at the layer (checked by probe_layer)
    gradient_wrt = LAYER_WRT

    def __init__(self, model: nn.Module, layer: nn.Module):
        super().__init__(model)
        self.layer = check_layer(model, layer)

    def _prepare_layer(self, inputs: Any, target: TargetType, chunk_size: int | None,
                       upsample: bool, mode: str, relu: bool, additional_forward_args: Any = None) -> tuple:
        """The shared checks of :meth:`_prepare_call` plus the options and the layer probe (:func:`probe_layer`).

        Returns (inputs as a tuple, whether a tuple was given, target, chunk size, additional args).
        """
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        check_bool("relu", relu)
        check_bool("upsample", upsample)
        check_choice("interpolate_mode", mode, ("bilinear", "nearest", "bicubic", "area"))
        probe_layer(self.model, self.layer, probe_example(xs, args, is_tuple), t)
        return xs, is_tuple, t, cs, args

    def _finish(self, cam: torch.Tensor, x: torch.Tensor, upsample: bool, mode: str) -> torch.Tensor:
        check_choice("interpolate_mode", mode, ("bilinear", "nearest", "bicubic", "area"))
        if upsample:
            if x.ndim != 4 or cam.ndim != 4:
                raise ValueError("upsample=True needs image inputs (N, C, H, W) and a 2-D layer; pass upsample=False")
            cam = upsample_map(cam, tuple(x.shape[2:]), mode)
        return cam


class GradCAMpp(_CamBase):
    """Grad-CAM++: ``GradCAMpp(model, layer).attribute(x, target=c)`` -> (N, 1, H, W) maps."""

    def attribute(
        self,
        inputs: InputsType,
        target: TargetType = None,
        relu: bool = True,
        upsample: bool = True,
        interpolate_mode: str = "bilinear",
        feature_maps: Sequence[int] | None = None,
        neurons: torch.Tensor | None = None,
        chunk_size: int | None = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """Return the Grad-CAM++ map per example (see the module docstring); batched, one backward per chunk.

        A tuple of inputs and ``additional_forward_args`` pass through to the model (``model(*inputs, *args)``);
        the map is upsampled to the spatial size of ``inputs[0]``.
        """
        xs, is_tuple, t, cs, args = self._prepare_layer(inputs, target, chunk_size, upsample, interpolate_mode, relu,
                                                        additional_forward_args)
        acts, g = layer_activations_and_gradients(self.model, self.layer, as_inputs(xs, is_tuple), t, cs,
                                                  additional_forward_args=args)
        mask = _unit_mask(feature_maps, neurons, tuple(acts.shape[1:]))
        cam = gradcampp_map(acts, g, g * g, g * g * g, mask, relu)
        return self._finish(cam, xs[0], upsample, interpolate_mode)


class SmoothGradCAMpp(_CamBase):
    """Smooth Grad-CAM++: Grad-CAM++ with the derivatives averaged over SmoothGrad-style noisy copies."""

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        n_samples: int = 25,
        noise_level: float | None = None,
        stdevs: float | None = None,
        value_range: tuple[float, float] | None = None,
        seed: int | None = None,
        feature_maps: Sequence[int] | None = None,
        neurons: torch.Tensor | None = None,
        relu: bool = True,
        upsample: bool = True,
        interpolate_mode: str = "bilinear",
        chunk_size: int | None = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """Return the Smooth Grad-CAM++ map per example.

        Args:
            n_samples: noisy copies per example (the yiskw713 implementation uses 25; torch-cam 4).
            noise_level: sigma as a fraction of each example's range x_max - x_min (default 0.15), or of
                ``value_range``; ``stdevs`` gives an absolute sigma instead.
            seed: seed for the noise (global RNG untouched).
            feature_maps: restrict the map to these channels k.
            neurons: boolean mask over positions (h, w) or units (K, h, w) that enter the weights and the map.
            chunk_size: noisy rows per forward/backward pass.
            additional_forward_args: passed to the model after the inputs (not noised); per-example tensors are
                repeated for every noisy copy.

        A tuple of inputs passes through to the model; every input gets its own noise (``noise_level``,
        ``stdevs``, ``value_range`` one value for all or a tuple with one per input); the map is upsampled to
        the spatial size of ``inputs[0]``.
        """
        xs, is_tuple, t, cs, args = self._prepare_layer(inputs, target, chunk_size, upsample, interpolate_mode, relu,
                                                        additional_forward_args)
        x = xs[0]
        n_samples = check_int("n_samples", n_samples, minimum=1)
        stds = _noise_stds(xs, is_tuple, noise_level, stdevs, value_range)
        acts = torch.cat([
            layer_activations_and_gradients(self.model, self.layer, slice_inputs(xs, sl, is_tuple),
                                            None if t is None else t[sl], None,
                                            additional_forward_args=slice_args(args, sl))[0]
            for sl in chunk_slices(x.shape[0], cs)
        ])
        noisy = draw_smoothgrad_noise(as_inputs(xs, is_tuple), n_samples, as_inputs(stds, is_tuple), seed)
        noisy_xs = noisy if is_tuple else (noisy,)
        ea = expand_args(args, n_samples)
        tt = None if t is None else t.repeat_interleave(n_samples, dim=0)
        d1 = torch.zeros((x.shape[0],) + tuple(acts.shape[1:]), dtype=acts.dtype, device=acts.device)
        d2, d3 = d1.clone(), d1.clone()
        # accumulate the three moments chunk by chunk so memory stays at one chunk of gradients
        for sl in chunk_slices(noisy_xs[0].shape[0], cs):
            _, g = layer_activations_and_gradients(self.model, self.layer, slice_inputs(noisy_xs, sl, is_tuple),
                                                   None if tt is None else tt[sl], None,
                                                   additional_forward_args=slice_args(ea, sl))
            rows = torch.arange(sl.start, sl.stop, device=g.device) // n_samples
            d1.index_add_(0, rows, g)
            d2.index_add_(0, rows, g * g)
            d3.index_add_(0, rows, g * g * g)
        d1, d2, d3 = d1 / n_samples, d2 / n_samples, d3 / n_samples
        mask = _unit_mask(feature_maps, neurons, tuple(acts.shape[1:]))
        cam = gradcampp_map(acts, d1, d2, d3, mask, relu)
        return self._finish(cam, x, upsample, interpolate_mode)


__all__ = ["GradCAMpp", "SmoothGradCAMpp", "gradcampp_map", "layer_activations_and_gradients"]
