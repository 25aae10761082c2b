"""Exact absorption of an output-neuron permutation into the next layer (JLCM, arXiv 2309.17361).

Re-ordering the output neurons of a layer ``l`` by a permutation :math:`\\pi` leaves the network's function
unchanged when the permutation is undone at the next layer's input:

.. math:: W_l \\leftarrow P W_l,\\quad b_l \\leftarrow P b_l,\\quad W_{l+1} \\leftarrow W_{l+1} P^\\top,

provided everything between the two layers acts element-wise or per channel (activations, dropout, identity,
``BatchNorm`` — whose affine parameters and running statistics are permuted too) or is a ``flatten`` that turns
``C`` channels of ``s`` positions each into ``C·s`` features (then :math:`W_{l+1}`'s columns are permuted in
blocks of ``s``).

:func:`plan_reordering` finds, with ``torch.fx``, for each Linear/Conv layer whether its output reaches exactly
one Linear/Conv consumer (called once, ``groups=1``) through such operations only and nothing else; when not
(the model output, a residual connection, a reshape, a shared module, a model that cannot be traced) it gives
the reason, and the caller keeps that layer's original neuron order. :func:`apply_permutation` performs the
exact re-ordering in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["COMPRESSIBLE", "ReorderPlan", "apply_permutation", "plan_reordering"]

COMPRESSIBLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Layer types whose ``weight`` (output neurons/channels on dim 0) is compressed."""

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu,
    F.mish, F.sigmoid, F.tanh, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, F.softsign, F.logsigmoid,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous"}
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class ReorderPlan:
    """How the output neurons of one layer can be re-ordered.

    Attributes:
        layer: the layer's qualified name.
        consumer: the next layer's qualified name (``None`` when the permutation cannot be absorbed).
        norms: names of ``BatchNorm`` modules in between (their parameters and buffers are permuted too).
        block: columns of the consumer per output channel (``> 1`` after a ``flatten`` of a conv output).
        reason: why re-ordering is impossible (``None`` when it is possible).
    """

    layer: str
    consumer: str | None = None
    norms: list[str] = field(default_factory=list)
    block: int = 1
    reason: str | None = None

    @property
    def possible(self) -> bool:
        return self.reason is None


def _describe(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return f"module '{node.target}'"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    return f"{node.op} node"


def _only_first_arg(node: torch.fx.Node, cur: torch.fx.Node) -> bool:
    """``cur`` is the node's first positional argument and no other argument holds a graph value."""
    if not node.args or node.args[0] is not cur:
        return False
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg((tuple(node.args[1:]), dict(node.kwargs)), lambda n: found.append(n) or n)
    return not found


def _flatten_start(node: torch.fx.Node, mod: nn.Module | None) -> int | None:
    """``start_dim`` of a flatten to the end, or ``None`` if the node is not such a flatten."""
    if isinstance(mod, nn.Flatten):
        return mod.start_dim if mod.end_dim == -1 else None
    is_fn = node.op == "call_function" and node.target is torch.flatten
    is_method = node.op == "call_method" and node.target == "flatten"
    if not (is_fn or is_method):
        return None
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start if end == -1 and isinstance(start, int) else None


def _follow(gm: torch.fx.GraphModule, start: torch.fx.Node, rows: int, is_conv: bool,
            calls: dict[str, int]) -> ReorderPlan:
    plan = ReorderPlan(layer=str(start.target))
    cur, flattened = start, False
    while True:
        users = list(cur.users)
        if len(users) != 1:
            plan.reason = (f"the output of {_describe(cur)} is used by {len(users)} operations "
                           "(a permutation must reach exactly one next layer)")
            return plan
        u = users[0]
        if u.op == "output":
            plan.reason = "its output is (part of) the model output, where the order of neurons is observable"
            return plan
        mod = gm.get_submodule(u.target) if u.op == "call_module" else None
        if not _only_first_arg(u, cur):
            plan.reason = f"its output enters {_describe(u)} together with other values"
            return plan
        if isinstance(mod, COMPRESSIBLE):
            if calls.get(str(u.target), 0) != 1:
                plan.reason = f"the next layer '{u.target}' is called more than once"
                return plan
            if isinstance(mod, nn.Linear):
                if is_conv and not flattened:
                    plan.reason = f"the next layer '{u.target}' is a Linear applied to the conv output's last axis"
                    return plan
                if mod.in_features % rows or (not is_conv and mod.in_features != rows):
                    plan.reason = f"the next layer '{u.target}' has {mod.in_features} inputs for {rows} neurons"
                    return plan
                plan.block = mod.in_features // rows
            else:
                if not is_conv or flattened or mod.groups != 1 or mod.in_channels != rows:
                    plan.reason = (f"the next layer '{u.target}' cannot take the permutation (needs a conv input with "
                                   f"groups=1 and {rows} input channels)")
                    return plan
            plan.consumer = str(u.target)
            return plan
        start_dim = _flatten_start(u, mod)
        if start_dim is not None:
            if start_dim != 1:
                plan.reason = f"it is flattened from dim {start_dim}, not 1"
                return plan
            flattened = True
        elif isinstance(mod, _BATCHNORM):
            if flattened or mod.num_features != rows:
                plan.reason = f"batch norm '{u.target}' does not act on its {rows} channels"
                return plan
            plan.norms.append(str(u.target))
        elif isinstance(mod, nn.PReLU):
            if mod.num_parameters != 1:
                plan.reason = f"PReLU '{u.target}' has per-channel parameters"
                return plan
        elif not (isinstance(mod, _ELEMENTWISE_MODULES)
                  or (u.op == "call_function" and u.target in _ELEMENTWISE_FUNCTIONS)
                  or (u.op == "call_method" and u.target in _ELEMENTWISE_METHODS)):
            plan.reason = f"its output goes through {_describe(u)}, which need not commute with a permutation"
            return plan
        cur = u


def plan_reordering(model: nn.Module, layers: list[str]) -> dict[str, ReorderPlan]:
    """For each name in ``layers`` (Linear/Conv submodules of ``model``), whether and how its output neurons can
    be re-ordered exactly. Never raises for an untraceable model: every plan then carries the reason."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "cannot prove the absorption"
        msg = f"the model cannot be traced by torch.fx ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        return {name: ReorderPlan(layer=name, reason=msg) for name in layers}
    calls: dict[str, int] = {}
    nodes: dict[str, torch.fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
            nodes[str(node.target)] = node
    plans: dict[str, ReorderPlan] = {}
    for name in layers:
        mod = model.get_submodule(name)
        if calls.get(name, 0) != 1:
            plans[name] = ReorderPlan(layer=name, reason="it is called more than once (or never) in the forward pass")
            continue
        if isinstance(mod, _CONV) and mod.groups != 1:
            plans[name] = ReorderPlan(layer=name, reason="it is a grouped convolution")
            continue
        rows = mod.weight.shape[0]
        plans[name] = _follow(gm, nodes[name], rows, isinstance(mod, _CONV), calls)
    return plans


@torch.no_grad()
def apply_permutation(model: nn.Module, plan: ReorderPlan, perm: torch.Tensor) -> None:
    """Re-order the output neurons of ``plan.layer`` by ``perm`` (new row ``i`` = old row ``perm[i]``) and undo it
    in the batch norms and the consumer of ``plan``, in place. The network's function is unchanged."""
    if not plan.possible:
        raise ValueError(f"layer '{plan.layer}' cannot be re-ordered: {plan.reason}")
    layer = model.get_submodule(plan.layer)
    rows = layer.weight.shape[0]
    if perm.shape != (rows,) or not torch.equal(perm.sort().values, torch.arange(rows, device=perm.device)):
        raise ValueError(f"perm must be a permutation of range({rows}); got shape {tuple(perm.shape)}")
    perm = perm.to(layer.weight.device)
    layer.weight.copy_(layer.weight[perm])
    if layer.bias is not None:
        layer.bias.copy_(layer.bias[perm])
    for name in plan.norms:
        bn = model.get_submodule(name)
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            if t is not None:
                t.copy_(t[perm])
    nxt = model.get_submodule(plan.consumer)
    w = nxt.weight
    if plan.block == 1:
        w.copy_(w[:, perm])
    else:
        shaped = w.view(w.shape[0], rows, plan.block)
        w.copy_(shaped[:, perm, :].reshape(w.shape))
