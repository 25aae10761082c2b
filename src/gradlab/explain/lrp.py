"""Layer-wise relevance propagation (Bach et al. 2015) wrapping ``captum.attr.LRP``, with its model restrictions
turned into handled cases or clear errors (research note §1, "LRP in Captum").

Captum's LRP attaches a propagation rule to every *leaf* module (epsilon rule, eps = 1e-9, for Conv2d, Linear,
pooling, BatchNorm2d; pass-through for ReLU, Dropout, Tanh) and:

* raises ``TypeError`` for any other leaf module, e.g. ``nn.Flatten`` -- **handled** here: shape-only modules
  (Flatten, Unflatten, Identity) get a pass-through rule (relevance is reshaped with the tensor);
* silently computes the wrong thing when two activations are summed in ``forward`` (a skip connection not wrapped
  in Captum's ``Addition_Module``) -- a ``ValueError`` here;
* keeps one activation per module, so a leaf module called twice (a reused ReLU) is wrong -- a ``ValueError``;
* writes ``rule`` attributes onto the model and deletes user-set ones afterwards, and in-place ReLUs break its
  backward hooks -- both avoided by working on a deep copy (the caller's model is never touched).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gradlab.explain._common import TargetType, check_bool, chunk_slices, hook_guard, watch_outputs
from gradlab.explain._inputs import InputsType, captum_target, merge_chunks, slice_args, slice_inputs
from gradlab.explain.gradients import Attribution, _captum_attr, probe_example

SHAPE_ONLY_MODULES: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Unflatten, nn.Identity)
_ADD_FUNCS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
              torch.Tensor.add_}


def _pass_through_rule():
    from captum.attr._utils.lrp_rules import PropagationRule

    class PassThroughRule(PropagationRule):
        """Relevance passes unchanged through a shape-only module (no hooks, no weights)."""

        def forward_hook(self, module, inputs, outputs):
            return None

        def _manipulate_weights(self, module, inputs, outputs):
            return None

    return PassThroughRule()


class _AddSpy(TorchFunctionMode):
    def __init__(self, depth: list[int], found: list[tuple[int, ...]]):
        super().__init__()
        self.depth, self.found = depth, found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth[0] == 0 and func in _ADD_FUNCS and len(args) >= 2:
            a, b = args[0], args[1]
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.ndim >= 1 and a.shape == b.shape:
                self.found.append(tuple(a.shape))
        return func(*args, **(kwargs or {}))


def check_lrp_structure(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """Trace one forward pass; raise for reused leaves, bare skip connections and rule-less leaves; return a copy
    with pass-through rules on shape-only modules and ``inplace=False`` nonlinearities."""
    _captum_attr()
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
    from captum.attr._utils.custom_modules import Addition_Module

    names = {m: n for n, m in model.named_modules()}
    leaves = [m for m in model.modules() if len(list(m.children())) == 0]
    counts: dict[str, int] = {}
    depth = [0]
    found: list[tuple[int, ...]] = []

    def pre(mod, args):
        counts[names[mod]] = counts.get(names[mod], 0) + 1
        depth[0] += 1

    def post(mod, args, out):
        depth[0] -= 1

    handles = []
    try:
        for m in leaves:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        for m in model.modules():
            if isinstance(m, Addition_Module):
                handles += [m.register_forward_pre_hook(lambda mod, a: depth.__setitem__(0, depth[0] + 1)),
                            m.register_forward_hook(lambda mod, a, o: depth.__setitem__(0, depth[0] - 1))]
        with torch.no_grad(), _AddSpy(depth, found):
            # a tuple is the model's positional arguments (several inputs and additional forward args)
            model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for h in handles:
            h.remove()
    reused = [n for n, c in counts.items() if c > 1]
    if reused:
        raise ValueError(f"LRP: leaf modules {reused} are called more than once per forward pass; LRP stores one "
                         "activation per module, so give each use its own module")
    if found:
        raise ValueError(f"LRP: forward() adds two activations of shape {found[0]} (a skip connection); Captum's LRP "
                         "would silently propagate wrong relevance. Wrap the sum in captum's Addition_Module")
    unsupported = [
        names[m] for m in leaves
        if not hasattr(m, "rule") and type(m) not in SUPPORTED_LAYERS_WITH_RULES
        and type(m) not in SUPPORTED_NON_LINEAR_LAYERS and not isinstance(m, SHAPE_ONLY_MODULES)
    ]
    if unsupported:
        raise ValueError(f"LRP: modules {unsupported} have no LRP rule; set `module.rule` to a captum "
                         "PropagationRule or use Conv2d/Linear/pooling/BatchNorm2d/ReLU/Tanh/Dropout")
    model = copy.deepcopy(model)
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    return model


def _attach_rules(model: nn.Module, user_rules: dict[str, object]) -> None:
    """Re-attach user-set rules and give shape-only modules a pass-through rule.

    Captum deletes every ``rule`` attribute after each call (user-set ones included), so this runs per call.
    """
    for n, m in model.named_modules():
        if n in user_rules:
            m.rule = user_rules[n]
        elif isinstance(m, SHAPE_ONLY_MODULES) and not hasattr(m, "rule"):
            m.rule = _pass_through_rule()


class LRP(Attribution):
    """LRP-epsilon via Captum: ``LRP(model).attribute(x, target=c)`` -> relevance shaped like ``x``.

    Conservation: sum(relevance) = f_c(x) up to the epsilon stabiliser (``return_convergence_delta``). For a
    bias-free ReLU network with epsilon -> 0 it equals gradient x input.
    """

    requires_module = True

    def attribute(
        self, inputs: InputsType, target: TargetType = None, chunk_size: int | None = None,
        return_convergence_delta: bool = False, additional_forward_args: object = None,
    ) -> object:
        """Return the relevance (and the conservation error when asked); a tuple of relevances for tuple inputs."""
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        check_bool("return_convergence_delta", return_convergence_delta)
        with hook_guard(self.model):
            model = check_lrp_structure(self.model, probe_example(xs, args, is_tuple))
            lrp = _captum_attr().LRP(model)
            user_rules = {n: m.rule for n, m in model.named_modules() if hasattr(m, "rule")}
            parts = []
            with hook_guard(model), watch_outputs(model, True):
                for sl in chunk_slices(xs[0].shape[0], cs):
                    _attach_rules(model, user_rules)
                    parts.append(lrp.attribute(slice_inputs(xs, sl, is_tuple), target=captum_target(t, sl),
                                               additional_forward_args=slice_args(args, sl),
                                               return_convergence_delta=return_convergence_delta))
        return merge_chunks(parts, is_tuple, return_convergence_delta)


__all__ = ["LRP", "check_lrp_structure", "SHAPE_ONLY_MODULES"]
