"""A compressed network: its stored weights, its storage bytes and the plain ``nn.Module`` it decodes to.

Every compressor in :mod:`gradlab.compression` (JLCM, arXiv 2309.17361, and the baselines) returns a
:class:`CompressedModel`. It holds

* ``weights``: one :class:`~gradlab.compression.storage.CompressedWeight` per compressed Linear/Conv layer
  (packed indices + fp16 tables: what would be written to disk);
* ``reference``: the float model in the same neuron order (JLCM re-orders neurons; the re-ordered float model
  computes the same function as the original), the baseline for layer-wise errors;
* :meth:`~CompressedModel.to_module`: a normal ``nn.Module`` whose compressed weights are decoded from the
  stored form (everything else — biases, norms, other parameters — kept as in the float model).

This module also holds the helpers shared by the compressors: finding the layers, running calibration inputs
through a model in chunks and capturing a layer's inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from gradlab.compression.permute import COMPRESSIBLE
from gradlab.compression.storage import CompressedWeight
from gradlab.core.validation import check_int, check_tensor, check_type

__all__ = ["CompressedModel", "StorageReport", "capture_layer_io", "compressible_layers", "run_model",
           "validate_inputs"]

_FP16_MAX = float(torch.finfo(torch.float16).max)


def compressible_layers(model: nn.Module, layers: Iterable[str] | None = None) -> list[str]:
    """Qualified names of the Linear/Conv submodules of ``model`` to compress (all of them, or ``layers``).

    Raises ``ValueError`` when there is none, a name is unknown or not Linear/Conv, or a weight holds NaN/inf or
    values fp16 cannot store.
    """
    check_type("model", model, nn.Module)
    found = [n for n, m in model.named_modules() if isinstance(m, COMPRESSIBLE)
             and not isinstance(m.weight, nn.parameter.UninitializedParameter)]
    if layers is None:
        names = found
    else:
        if isinstance(layers, str):
            raise TypeError("layers must be a list of layer names, not a string")
        names = list(layers)
        bad = [n for n in names if n not in found]
        if bad:
            raise ValueError(f"layers must name Linear/Conv layers of the model ({found}); got unknown {bad}")
        if len(set(names)) != len(names):
            raise ValueError(f"layers must not repeat a name; got {names}")
    if not names:
        raise ValueError("model has no Linear/Conv1d/Conv2d/Conv3d layer to compress")
    for n in names:
        w = model.get_submodule(n).weight
        if not w.is_floating_point():
            raise TypeError(f"layer '{n}' must have a floating-point weight; got {w.dtype}")
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"layer '{n}' has NaN or inf weights")
        if float(w.detach().abs().max()) > _FP16_MAX:
            raise ValueError(f"layer '{n}' has weights beyond the fp16 range |w| <= {_FP16_MAX:g} of the codebooks")
    return names


def validate_inputs(inputs: Any, name: str = "calibration_inputs") -> tuple[torch.Tensor, ...]:
    """Inputs as a tuple of tensors with a common, non-empty batch dimension; floats must be finite."""
    tensors = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    if not isinstance(tensors, (tuple, list)) or not tensors:
        raise TypeError(f"{name} must be a tensor or a non-empty tuple/list of tensors (the model's positional "
                        f"inputs); got {type(inputs).__name__}")
    for i, t in enumerate(tensors):
        check_tensor(f"{name}[{i}]" if len(tensors) > 1 else name, t, finite=True)
        if t.ndim == 0 or t.shape[0] == 0:
            raise ValueError(f"{name} must have a non-empty batch dimension; got shape {tuple(t.shape)}")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"{name} must share the batch size; got {[t.shape[0] for t in tensors]}")
    return tuple(tensors)


@torch.no_grad()
def run_model(model: nn.Module, inputs: tuple[torch.Tensor, ...], chunk: int = 256) -> Any:
    """``model(*inputs)`` in eval mode and chunks of ``chunk`` rows (outputs concatenated if tensors)."""
    check_int("chunk", chunk, minimum=1)
    was = model.training
    model.eval()
    try:
        outs = [model(*(t[i:i + chunk] for t in inputs)) for i in range(0, inputs[0].shape[0], chunk)]
    finally:
        model.train(was)
    return torch.cat(outs) if isinstance(outs[0], torch.Tensor) else outs


@torch.no_grad()
def capture_layer_io(model: nn.Module, layer: str, inputs: tuple[torch.Tensor, ...],
                     chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output of submodule ``layer`` when ``model`` runs on ``inputs`` (eval mode, chunked)."""
    mod = model.get_submodule(layer)
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        xs.append(args[0].detach())
        ys.append(out.detach())

    handle = mod.register_forward_hook(hook)
    try:
        run_model(model, inputs, chunk)
    finally:
        handle.remove()
    return torch.cat(xs), torch.cat(ys)


@dataclass(frozen=True)
class StorageReport:
    """Bytes of a compressed model.

    Attributes:
        compressed_bytes: packed indices and fp16 tables of the compressed layers.
        compressed_weights: number of weights they encode.
        other_bytes: every other parameter and buffer of the model at its own dtype (biases, norms, ...).
        per_layer: ``{layer: bytes}`` of the compressed layers.
    """

    compressed_bytes: int
    compressed_weights: int
    other_bytes: int
    per_layer: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return self.compressed_bytes + self.other_bytes

    @property
    def bits_per_weight(self) -> float:
        """Measured rate of the compressed layers, ``8·compressed_bytes / compressed_weights``."""
        return 8 * self.compressed_bytes / self.compressed_weights


class CompressedModel:
    """A compressed network (see the module docstring).

    Args:
        reference: the float model in the neuron order the stored weights use (not copied: pass a copy).
        weights: ``{layer name: CompressedWeight}``.
        method: a label (``"jlcm"``, ``"kmeans"``, ``"uniform"``).
        info: free-form details (bits, groups, per-layer losses, warnings).
    """

    def __init__(self, reference: nn.Module, weights: dict[str, CompressedWeight], method: str,
                 info: dict[str, Any] | None = None) -> None:
        check_type("reference", reference, nn.Module)
        for name, cw in weights.items():
            check_type(f"weights['{name}']", cw, CompressedWeight)
            w = reference.get_submodule(name).weight
            if tuple(w.shape) != cw.shape:
                raise ValueError(f"weights['{name}'] has shape {cw.shape}; the layer's weight is {tuple(w.shape)}")
        self.reference = reference
        self.weights = dict(weights)
        self.method = method
        self.info = dict(info or {})
        self._module: nn.Module | None = None

    def to_module(self) -> nn.Module:
        """A new plain ``nn.Module`` (a copy of ``reference``) with every compressed weight replaced by its
        decoded value, in the layer's own dtype and device."""
        module = copy.deepcopy(self.reference)
        with torch.no_grad():
            for name, cw in self.weights.items():
                w = module.get_submodule(name).weight
                w.copy_(cw.to(w.device).decode(w.dtype))
        return module

    @property
    def module(self) -> nn.Module:
        """The decoded model (built once by :meth:`to_module` and cached)."""
        if self._module is None:
            self._module = self.to_module()
        return self._module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def storage(self) -> StorageReport:
        """Bytes of the stored model: compressed layers as stored, everything else at its dtype."""
        per_layer = {n: cw.nbytes for n, cw in self.weights.items()}
        skip = {id(self.reference.get_submodule(n).weight) for n in self.weights}
        other = sum(t.numel() * t.element_size() for t in self.reference.parameters() if id(t) not in skip)
        other += sum(t.numel() * t.element_size() for t in self.reference.buffers())
        return StorageReport(compressed_bytes=sum(per_layer.values()),
                             compressed_weights=sum(cw.numel for cw in self.weights.values()),
                             other_bytes=other, per_layer=per_layer)

    def storage_bytes(self) -> int:
        """Total bytes (``StorageReport.total_bytes`` of :meth:`storage`)."""
        return self.storage().total_bytes

    def __repr__(self) -> str:
        s = self.storage()
        return (f"CompressedModel(method={self.method!r}, layers={len(self.weights)}, "
                f"bits/weight={s.bits_per_weight:.4f}, bytes={s.total_bytes})")

