"""Neuron activation profiles (NAP), a global explanation: how each feature map responds to groups of inputs.

Chatterjee et al. (arXiv 2006.02570, following Krug et al.'s NAPs), procedure of the paper's code:

1. record the feature maps A^l_c(x) of chosen layers l for every input x;
2. drop "dead" maps whose value range over all inputs and positions is <= 1e-30;
3. average the maps per group G (e.g. COVID-19, pneumonia, no finding): P_G = mean_{x in G} A(x);
4. normalise by subtracting the across-group mean: ``N_G = P_G - (1/|groups|) sum_H P_H``;
5. rank maps by mean ``|N_G|`` over groups and positions and show the top ones.

Groups may overlap (multilabel data): pass a boolean membership matrix (N, G) instead of labels (N,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from gradlab.core.validation import check_int, check_positive
from gradlab.explain._common import (
    check_binary_mask,
    check_chunk_size,
    check_finite_tensor,
    check_inputs,
    check_model,
    chunk_slices,
    forward,
    hook_guard,
)
from gradlab.explain.gradcam import layer_not_called


@dataclass
class ActivationProfiles:
    """Result of :func:`neuron_activation_profiles`, one entry per layer name.

    Attributes:
        group_names: names of the G groups.
        profiles: raw group-mean maps P, shape (G, C, ...).
        normalized: P minus the across-group mean, shape (G, C, ...).
        alive: (C,) bool, False for dead maps (range <= threshold); dead maps are zero in ``normalized``.
        counts: number of inputs per group, shape (G,).
    """

    group_names: list[str]
    profiles: dict[str, torch.Tensor]
    normalized: dict[str, torch.Tensor]
    alive: dict[str, torch.Tensor]
    counts: torch.Tensor

    def _layer(self, layer: str) -> str:
        if layer not in self.normalized:
            raise ValueError(f"layer must be one of the profiled layers {list(self.normalized)}; got {layer!r}")
        return layer

    def scores(self, layer: str) -> torch.Tensor:
        """Mean ``|normalised NAP|`` per map (C,), -inf for dead maps."""
        n = self.normalized[self._layer(layer)]
        s = n.abs().reshape(n.shape[0], n.shape[1], -1).mean((0, 2))
        return torch.where(self.alive[layer], s, torch.full_like(s, float("-inf")))

    def top_maps(self, layer: str, k: int = 10) -> torch.Tensor:
        """Indices of the ``k`` most group-discriminative alive maps of ``layer`` (fewer if fewer are alive)."""
        k = check_int("k", k, minimum=1)
        s = self.scores(self._layer(layer))
        order = torch.argsort(s, descending=True)
        return order[: min(k, int(self.alive[layer].sum()))]


def _membership(groups: torch.Tensor, n: int, group_names: Sequence[str] | None) -> tuple[torch.Tensor, list[str]]:
    if not isinstance(groups, torch.Tensor):
        try:
            groups = torch.as_tensor(groups)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"groups must be integer labels (N,) or a membership matrix (N, G); got "
                            f"{type(groups).__name__}") from err
    if groups.ndim not in (1, 2):
        raise ValueError(f"groups must be labels (N,) or a membership matrix (N, G); got shape {tuple(groups.shape)}")
    if groups.shape[0] != n:
        raise ValueError(f"groups must have one row per input ({n}); got {groups.shape[0]}")
    if groups.ndim == 1:
        if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
            raise ValueError(f"group labels must be non-negative integers; got dtype {groups.dtype} (pass a "
                             "membership matrix (N, G) for overlapping groups)")
        if bool((groups < 0).any()):
            raise ValueError(f"group labels must be non-negative integers; got {int(groups.min())}")
        g = int(groups.max()) + 1
        mem = torch.zeros(n, g, dtype=torch.bool)
        mem[torch.arange(n), groups.long()] = True
    else:
        try:
            mem = check_binary_mask("groups", groups)
        except (TypeError, ValueError) as err:
            raise ValueError(f"a membership matrix must be boolean / 0-1: {err}") from None
    if group_names is not None and (isinstance(group_names, (str, bytes)) or not isinstance(group_names, Sequence)):
        raise TypeError(f"group_names must be a sequence of names (one per group); got {type(group_names).__name__}")
    names = [str(i) for i in range(mem.shape[1])] if group_names is None else [str(s) for s in group_names]
    if len(names) != mem.shape[1]:
        raise ValueError(f"group_names must name {mem.shape[1]} groups; got {len(names)}")
    empty = [names[i] for i in range(mem.shape[1]) if not bool(mem[:, i].any())]
    if empty:
        raise ValueError(f"groups {empty} have no members")
    return mem, names


@torch.no_grad()
def neuron_activation_profiles(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    inputs: torch.Tensor,
    groups: torch.Tensor,
    group_names: Sequence[str] | None = None,
    dead_threshold: float = 1e-30,
    chunk_size: int | None = None,
) -> ActivationProfiles:
    """Compute NAPs of ``layers`` (name -> submodule) over ``inputs`` grouped by ``groups``.

    Activations are accumulated chunk by chunk (sums per group, running min/max), so memory holds one chunk.
    """
    check_model(model, require_module=True)
    x = check_inputs(inputs, model)
    cs = check_chunk_size(chunk_size)
    check_positive("dead_threshold", dead_threshold, allow_zero=True)
    if not isinstance(layers, Mapping) or not layers:
        raise TypeError(f"layers must be a non-empty mapping name -> nn.Module; got {type(layers).__name__}")
    mods = set(model.modules())
    for name, layer in layers.items():
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layers[{name!r}] must be an nn.Module (a submodule of the model); got "
                            f"{type(layer).__name__}")
        if layer not in mods:
            raise ValueError(f"layers[{name!r}] must be a submodule of the model")
    mem, names = _membership(groups, x.shape[0], group_names)
    memf = mem.to(x.dtype).to(x.device)
    sums: dict[str, torch.Tensor] = {}
    lo: dict[str, torch.Tensor] = {}
    hi: dict[str, torch.Tensor] = {}
    for sl in chunk_slices(x.shape[0], cs):
        store: dict[str, torch.Tensor] = {}

        def record(mod, args, out, key):
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layers[{key!r}] must output a tensor (N, C, ...); got {type(out).__name__}")
            store[key] = out.detach()

        with hook_guard(model):
            handles = [
                layer.register_forward_hook(lambda mod, a, out, key=name: record(mod, a, out, key))
                for name, layer in layers.items()
            ]
            try:
                forward(model, x[sl])
            finally:
                for h in handles:
                    h.remove()
        for name, a in store.items():
            if a.ndim < 2 or a.shape[0] != x[sl].shape[0]:
                raise ValueError(f"layers[{name!r}] output must be (N, C, ...) with one row per input; got "
                                 f"{tuple(a.shape)} for {x[sl].shape[0]} inputs")
            if not a.is_floating_point():
                raise TypeError(f"layers[{name!r}] output must be floating point; got dtype {a.dtype}")
            check_finite_tensor(f"the activations of layers[{name!r}]", a)
            s = torch.einsum("ng,n...->g...", memf[sl], a)
            red = (0,) + tuple(range(2, a.ndim))
            amin, amax = a.amin(dim=red), a.amax(dim=red)
            if name in sums:
                sums[name] += s
                lo[name] = torch.minimum(lo[name], amin)
                hi[name] = torch.maximum(hi[name], amax)
            else:
                sums[name], lo[name], hi[name] = s, amin, amax
    missing = [n for n in layers if n not in sums]
    if missing:
        raise layer_not_called(model, layers[missing[0]], f"layers[{missing[0]!r}]")
    counts = mem.sum(0)
    profiles, normalized, alive = {}, {}, {}
    for name, s in sums.items():
        p = s / counts.to(s).view((-1,) + (1,) * (s.ndim - 1))
        live = (hi[name] - lo[name]) > dead_threshold
        nz = p - p.mean(0, keepdim=True)
        nz = nz * live.view((1, -1) + (1,) * (nz.ndim - 2)).to(nz.dtype)
        profiles[name], normalized[name], alive[name] = p, nz, live.cpu()
    return ActivationProfiles(names, profiles, normalized, alive, counts)


__all__ = ["ActivationProfiles", "neuron_activation_profiles"]
