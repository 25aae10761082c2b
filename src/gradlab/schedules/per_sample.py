"""Per-sample gradients of a ``torch.nn.Module`` with ``torch.func.vmap(torch.func.grad(...))``.

The gradient of the loss of each sample ``i`` of a batch, ``G_i = grad_w l(f_w(x_i), y_i)``, stacked along a leading
batch dimension, as in the PyTorch per-sample-gradient recipe: the model is called functionally
(``torch.func.functional_call``) on one sample at a time under ``vmap``, so no Python loop over samples runs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import functional_call, grad, vmap

from gradlab.core.validation import check_choice, check_int, check_type

__all__ = ["per_sample_grads", "flatten_per_sample"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_sample_grads(
    model: torch.nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> dict[str, torch.Tensor]:
    """Return ``{name: G}`` with ``G[i]`` the gradient of ``loss_fn(model(x_i[None]), y_i[None])`` w.r.t. ``name``.

    Args:
        model: the module; only parameters with ``requires_grad`` are differentiated (buffers are passed along).
        loss_fn: ``(outputs, targets) -> scalar`` for a batch of one sample (e.g. ``F.cross_entropy``).
        inputs, targets: tensors whose first dimension is the batch.
        chunk_size: ``vmap`` chunking to bound memory (``None``: all samples at once).
        randomness: ``vmap``'s randomness mode (``"same"`` for dropout-like layers; BatchNorm in training mode
            does not have per-sample semantics).
    """
    check_type("model", model, torch.nn.Module)
    check_type("inputs", inputs, torch.Tensor)
    check_type("targets", targets, torch.Tensor)
    if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets must share a leading batch dimension; got {tuple(inputs.shape)} "
                         f"and {tuple(targets.shape)}")
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, minimum=1)
    check_choice("randomness", randomness, ("error", "same", "different"))
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    if not params:
        raise ValueError("model has no parameter with requires_grad=True")

    def sample_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**p, **frozen}, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    fn = vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk_size, randomness=randomness)
    return fn(params, inputs, targets)


def flatten_per_sample(per_sample: torch.Tensor | dict[str, torch.Tensor] | list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-sample gradient blocks ``(b, *shape_k)`` into one ``(b, D)`` matrix."""
    if isinstance(per_sample, torch.Tensor):
        blocks = [per_sample]
    elif isinstance(per_sample, dict):
        blocks = list(per_sample.values())
    elif isinstance(per_sample, (list, tuple)):
        blocks = list(per_sample)
    else:
        raise TypeError(f"per_sample_grads must be a tensor, dict or list of tensors; got {type(per_sample).__name__}")
    if not blocks or not all(isinstance(b, torch.Tensor) and b.ndim >= 1 for b in blocks):
        raise ValueError("per_sample_grads must hold at least one tensor with a leading batch dimension")
    n = blocks[0].shape[0]
    if any(b.shape[0] != n for b in blocks):
        raise ValueError("every per-sample gradient block must have the same batch size")
    return torch.cat([b.detach().reshape(n, -1) for b in blocks], dim=1)
