"""Detect model structures on which hook-based attribution (DeepLIFT, guided backprop) is silently wrong.

Captum implements DeepLIFT's rescale rule and guided backprop by hooking *modules* (``nn.ReLU``, ``nn.Sigmoid``,
...). Three structures break that (research note §1 and §8; Captum issues #199, #578, #1082):

* a nonlinearity module **called more than once** per forward pass (DeepLIFT keeps one input/output pair per
  module, so the second call overwrites the first; Captum raises an obscure error or returns wrong multipliers);
* a **functional** nonlinearity (``F.relu``, ``torch.sigmoid``, ``x.relu()``) outside such a module: it gets the
  plain gradient, so the result is no longer DeepLIFT/guided backprop, without any warning;
* an **in-place** nonlinearity (``nn.ReLU(inplace=True)``): full backward hooks cannot wrap it. This case is
  handled: the method works on a deep copy with ``inplace=False`` (the caller's model is not touched).

:func:`inspect_nonlinearities` runs one traced forward pass on a single example and reports all three.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

DEEPLIFT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Softmax,
)
"""Modules for which Captum's DeepLift has a rule (rescale, or its max-pool/softmax rules)."""

UNSUPPORTED_DEEPLIFT_MODULES: tuple[type[nn.Module], ...] = (
    nn.GELU, nn.SiLU, nn.Mish, nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.PReLU, nn.SELU, nn.CELU,
    nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
)
"""Nonlinear modules that Captum's DeepLift treats with plain gradients (so the result is not DeepLIFT)."""

_RELU_FUNCS = {F.relu, torch.relu, F.relu_, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_OTHER_NONLINEAR_FUNCS = {
    torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, torch.tanh, torch.Tensor.tanh, F.tanh, F.elu, F.leaky_relu,
    F.softplus, F.gelu, F.silu, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.softmax, torch.softmax,
    torch.Tensor.softmax, F.mish, F.hardtanh, F.relu6, F.selu, F.celu,
}


@dataclass
class NonlinearityReport:
    """What one traced forward pass found (module names are ``named_modules`` paths)."""

    reused: list[str] = field(default_factory=list)
    functional: list[str] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


class _FunctionalSpy(TorchFunctionMode):
    def __init__(self, funcs: set, depth: list[int], found: list[str]):
        super().__init__()
        self.funcs, self.depth, self.found = funcs, depth, found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth[0] == 0 and func in self.funcs:
            self.found.append(getattr(func, "__qualname__", getattr(func, "__name__", str(func))))
        return func(*args, **(kwargs or {}))


def inspect_nonlinearities(
    model: nn.Module, example: torch.Tensor, modules: tuple[type[nn.Module], ...], relu_only: bool
) -> NonlinearityReport:
    """Trace one forward pass of ``model`` on ``example`` (batch of one) and report hook-hostile structure.

    Args:
        modules: the nonlinearity module types the method hooks.
        relu_only: look only for functional ReLUs (guided backprop) instead of every functional nonlinearity.
    """
    report = NonlinearityReport()
    counts: dict[str, int] = {}
    depth = [0]
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def pre(mod, args):
        counts[names[mod]] = counts.get(names[mod], 0) + 1
        depth[0] += 1

    def post(mod, args, out):
        depth[0] -= 1

    try:
        for m, n in names.items():
            if isinstance(m, modules):
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post))
                if getattr(m, "inplace", False):
                    report.inplace.append(n)
            elif not relu_only and isinstance(m, UNSUPPORTED_DEEPLIFT_MODULES):
                report.unsupported.append(n or type(m).__name__)
        funcs = set(_RELU_FUNCS) if relu_only else _RELU_FUNCS | _OTHER_NONLINEAR_FUNCS
        found: list[str] = []
        with torch.no_grad(), _FunctionalSpy(funcs, depth, found):
            # a tuple is the model's positional arguments (several inputs and additional forward args)
            model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for h in handles:
            h.remove()
    report.reused = [n for n, c in counts.items() if c > 1]
    report.functional = sorted(set(found))
    return report


def prepare_hooked_model(
    model: nn.Module, example: torch.Tensor, method: str, modules: tuple[type[nn.Module], ...], relu_only: bool,
    allow_reuse: bool = False,
) -> nn.Module:
    """Raise a clear ``ValueError`` for reused/functional/unsupported nonlinearities; fix in-place ones on a copy.

    ``allow_reuse`` accepts modules called several times (guided backprop's rule is stateless, so reuse is
    harmless there; DeepLIFT stores one reference activation per module, so it is not).
    Returns ``model`` itself, or a deep copy whose in-place nonlinearities have ``inplace=False``.
    """
    rep = inspect_nonlinearities(model, example, modules, relu_only)
    if rep.reused and not allow_reuse:
        raise ValueError(
            f"{method}: nonlinearity module(s) {rep.reused} are called more than once per forward pass; "
            f"{method} hooks modules, so each use needs its own module instance (e.g. self.act1, self.act2)"
        )
    if rep.unsupported:
        raise ValueError(
            f"{method}: modules {rep.unsupported} have no {method} rule (Captum would back-propagate plain "
            "gradients through them); use ReLU/ELU/LeakyReLU/Sigmoid/Tanh/Softplus"
        )
    if rep.functional:
        raise ValueError(
            f"{method}: functional nonlinearities {rep.functional} are called outside nn.Module layers; they would "
            f"get plain gradients and the result would silently not be {method}. Use nn.ReLU()/nn.Sigmoid()... modules"
        )
    if rep.inplace:
        model = copy.deepcopy(model)
        for n, m in model.named_modules():
            if n in rep.inplace:
                m.inplace = False
    return model
