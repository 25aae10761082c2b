"""Bytes of the tensors autograd saves for the backward pass (activation memory), measured with
``torch.autograd.graph.saved_tensors_hooks``.

The pack hook sees every tensor an autograd node saves; each storage is counted once, with the bytes of the largest
saved tensor viewing it (``numel × element_size``), so a tensor saved twice, or saved along with a view of
itself, is not counted twice. Storages of Parameters are left out by default: they are held
anyway, so they are not activation memory.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from gradlab.core.validation import check_type

__all__ = ["saved_tensor_bytes"]


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    s = t.untyped_storage()
    return (str(t.device), s.data_ptr())


def saved_tensor_bytes(fn: Callable[[], Any], modules: Iterable[nn.Module] | None = None,
                       exclude_parameters: bool = True, model: nn.Module | None = None) -> tuple[int, Any]:
    """Run ``fn()`` (a forward pass) and return ``(bytes saved for backward, fn's result)``.

    Args:
        fn: a callable running the forward pass whose graph is measured (keep its result alive for backward).
        modules: if given, count only tensors saved while one of these modules' ``forward`` runs (e.g. the
            linear layers of a model); otherwise everything ``fn`` saves.
        exclude_parameters: leave out storages shared with a Parameter of ``model`` or of ``modules``.
        model: where to look for Parameters to exclude (in addition to those of ``modules``).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {type(fn).__name__}")
    mods = None if modules is None else list(modules)
    for i, m in enumerate(mods or []):
        check_type(f"modules[{i}]", m, nn.Module)
    if model is not None:
        check_type("model", model, nn.Module)
    excluded: set[tuple[str, int]] = set()
    if exclude_parameters:
        for owner in ([model] if model is not None else []) + (mods or []):
            excluded.update(_storage_key(p) for p in owner.parameters())
    largest: dict[tuple[str, int], int] = {}
    depth = 0

    def pre(*_: Any) -> None:
        nonlocal depth
        depth += 1

    def post(*_: Any) -> None:
        nonlocal depth
        depth -= 1

    def pack(t: torch.Tensor) -> torch.Tensor:
        if mods is None or depth > 0:
            key = _storage_key(t)
            if key not in excluded:
                largest[key] = max(largest.get(key, 0), t.numel() * t.element_size())
        return t

    handles = []
    try:
        for m in mods or []:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn()
    finally:
        for h in handles:
            h.remove()
    return sum(largest.values()), out
