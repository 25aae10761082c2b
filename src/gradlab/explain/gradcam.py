"""Grad-CAM (Selvaraju et al. 2017), wrapping ``captum.attr.LayerGradCam`` with the paper's settings.

For the activations A^k (channel k) of a convolutional layer and the class score S^c (pre-softmax):

    w_k = (1/Z) sum_ij d S^c / d A^k_ij,        L^c = ReLU(sum_k w_k A^k).

Captum's defaults differ from the paper in two ways (research note §1): the ReLU is off by default
(``relu_attributions=False``) and the map stays at layer resolution. Here ``relu=True`` and
``upsample=True`` (bilinear, to the input's spatial size) are the defaults.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_choice
from gradlab.explain._common import (
    TargetType,
    check_bool,
    chunk_slices,
    grad_wrt,
    hook_guard,
    watch_outputs,
)
from gradlab.explain._inputs import (
    InputsType,
    call_model,
    captum_target,
    select_target,
    slice_args,
    slice_inputs,
)
from gradlab.explain.gradients import Attribution, _captum_attr, probe_example


def check_layer(model: nn.Module, layer: Any, name: str = "layer") -> nn.Module:
    """``layer`` must be a submodule of ``model`` (a module output; a functional op cannot be hooked)."""
    if not isinstance(layer, nn.Module):
        raise TypeError(f"{name} must be an nn.Module inside the model; got {type(layer).__name__}")
    if not any(m is layer for m in model.modules()):
        raise ValueError(f"{name} {type(layer).__name__} is not a submodule of the model")
    return layer


def layer_not_called(model: nn.Module, layer: nn.Module, name: str = "layer") -> ValueError:
    """The one error for a layer that the model's forward pass never calls (Grad-CAM, Grad-CAM++, NAPs)."""
    path = next((n for n, m in model.named_modules() if m is layer), "?")
    return ValueError(
        f"{name} {type(layer).__name__} ({path!r}) was not called during the forward pass, so it has no "
        "activations to explain; pick a module the model's forward uses"
    )


LAYER_WRT = "the layer's activations"


def probe_layer(model: nn.Module, layer: nn.Module, example: Any, target: torch.Tensor | None,
                attribute_to_layer_input: bool = False, name: str = "layer") -> None:
    """One forward/backward pass on one example, shared by Grad-CAM, Grad-CAM++ and Smooth Grad-CAM++.

    The layer must be called and give a tensor, the model's output must pass the output checks and its target
    score must depend differentiably on the layer's activations; each failure is a clear ``ValueError``.
    ``example`` is one tensor, or a tuple of the model's positional arguments (inputs, then additional args).
    """
    store: dict[str, torch.Tensor] = {}

    def hook(mod, args, out):
        t = args[0] if attribute_to_layer_input else out
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}'s {'input' if attribute_to_layer_input else 'output'} must be a tensor; got "
                            f"{type(t).__name__}")
        store["a"] = t

    x1 = tuple(e.detach() if isinstance(e, torch.Tensor) else e for e in example) \
        if isinstance(example, tuple) else (example.detach(),)
    with hook_guard(model), torch.enable_grad():
        handle = layer.register_forward_hook(hook)
        try:
            s = select_target(call_model(model, x1, None, differentiable=True), None if target is None else target[:1])
        finally:
            handle.remove()
        if "a" not in store:
            raise layer_not_called(model, layer, name)
        grad_wrt(s, store["a"], LAYER_WRT)


def upsample_map(cam: torch.Tensor, size: tuple[int, ...], mode: str = "bilinear") -> torch.Tensor:
    """Resize a layer-resolution map (N, 1, h, w) to ``size`` (H, W); bilinear without corner alignment."""
    if tuple(cam.shape[2:]) == tuple(size):
        return cam
    if mode in ("bilinear", "bicubic", "linear", "trilinear"):
        return F.interpolate(cam, size=size, mode=mode, align_corners=False)
    return F.interpolate(cam, size=size, mode=mode)


class GradCAM(Attribution):
    """Grad-CAM: ``GradCAM(model, layer).attribute(x, target=c)`` -> (N, 1, H, W) maps (or (N, 1, h, w))."""

    requires_module = True
    needs_input_gradient = False  # the gradient is taken at the layer (checked by probe_layer)
    gradient_wrt = LAYER_WRT

    def __init__(self, model: nn.Module, layer: nn.Module):
        super().__init__(model)
        self.layer = check_layer(model, layer)

    def attribute(
        self,
        inputs: InputsType,
        target: TargetType = None,
        relu: bool = True,
        upsample: bool = True,
        interpolate_mode: str = "bilinear",
        attribute_to_layer_input: bool = False,
        chunk_size: int | None = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """Return L^c per example: (N, 1, H, W) when ``upsample`` (inputs of shape (N, C, H, W)), else layer size.

        A tuple of inputs and ``additional_forward_args`` are passed through to the model (``model(*inputs,
        *additional_forward_args)``) as in Captum's ``LayerGradCam``; the map is of the layer, one per example,
        upsampled to the spatial size of ``inputs[0]``.
        """
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        x = xs[0]
        check_bool("relu", relu)
        check_bool("upsample", upsample)
        check_bool("attribute_to_layer_input", attribute_to_layer_input)
        check_choice("interpolate_mode", interpolate_mode, ("bilinear", "nearest", "bicubic", "area"))
        probe_layer(self.model, self.layer, probe_example(xs, args, is_tuple), t, attribute_to_layer_input)
        out = []
        with hook_guard(self.model), watch_outputs(self.model, True) as f:
            gc = _captum_attr().LayerGradCam(f, self.layer)
            for sl in chunk_slices(x.shape[0], cs):
                a = gc.attribute(
                    slice_inputs(xs, sl, is_tuple), target=captum_target(t, sl), relu_attributions=relu,
                    additional_forward_args=slice_args(args, sl), attribute_to_layer_input=attribute_to_layer_input,
                )
                out.append(a.detach())
        cam = torch.cat(out)
        if upsample:
            if x.ndim != 4 or cam.ndim != 4:
                raise ValueError("upsample=True needs image inputs (N, C, H, W) and a 2-D layer; pass upsample=False")
            cam = upsample_map(cam, tuple(x.shape[2:]), interpolate_mode)
        return cam


__all__ = ["GradCAM", "check_layer", "layer_not_called", "probe_layer", "upsample_map"]
