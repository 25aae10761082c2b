"""Shared plumbing of the attribution methods: argument checks, targets, chunked gradients, hook hygiene.

Every method in :mod:`gradlab.explain` follows Captum's call shape ``method(model).attribute(inputs, target=...)``
and the guarantees listed in the package docstring (eval mode checked, model never mutated, hooks always removed,
internal batching with ``chunk_size``). The helpers that implement those guarantees live here.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from gradlab.core.validation import check_int

TargetType = int | Sequence[int] | torch.Tensor | None


def check_model(model: Any, name: str = "model", require_module: bool = False) -> None:
    """Check that ``model`` is callable (an ``nn.Module`` when ``require_module``) and in eval mode.

    Attribution of a model in training mode mixes dropout noise and batch statistics of the perturbed batch into
    the explanation (BatchNorm sees the concatenated perturbations), so it is refused rather than silently fixed:
    calling ``model.eval()`` here would mutate the caller's model.
    """
    if require_module and not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module; got {type(model).__name__}")
    if not callable(model):
        raise TypeError(f"{name} must be callable (an nn.Module or a function); got {type(model).__name__}")
    if isinstance(model, nn.Module):
        training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
        if training:
            raise ValueError(
                f"{name} is in training mode (e.g. {training[0]!r}); call {name}.eval() before attributing: "
                "dropout and batch-norm statistics would otherwise change the explanation"
            )


def model_dtype(model: Any) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter, or ``None`` for functions/parameter-free models."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def check_inputs(inputs: Any, model: Any = None, name: str = "inputs", min_ndim: int = 2) -> torch.Tensor:
    """Check an input batch: a finite floating tensor with a batch dimension whose dtype matches the model's."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor with a leading batch dimension; got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {inputs.dtype}")
    if inputs.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions (batch first); got shape {tuple(inputs.shape)}"
        )
    if inputs.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch dimension")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError(f"{name} contains NaN or inf")
    dt = model_dtype(model)
    if dt is not None and inputs.dtype != dt:
        raise TypeError(f"{name} has dtype {inputs.dtype} but the model's parameters are {dt}; cast one of them")
    return inputs


def check_chunk_size(chunk_size: int | None) -> int | None:
    """``None`` (one pass) or a positive int: how many (expanded) rows go through the model at once."""
    if chunk_size is None:
        return None
    return check_int("chunk_size", chunk_size, minimum=1)


def normalize_target(target: TargetType, n: int) -> torch.Tensor | None:
    """Turn ``target`` into a LongTensor of shape (n,) or ``None`` (single-output models).

    Accepts an int (same class for every example), a sequence of n ints or a tensor of shape () or (n,).
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise TypeError("target must be an int, a sequence of ints or an integer tensor; got bool")
    if isinstance(target, int):
        t = torch.full((n,), int(target), dtype=torch.long)
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integers; got dtype {target.dtype}")
        t = target.detach().to("cpu", torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n).clone()
    elif isinstance(target, Sequence) and not isinstance(target, str):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in target):
            raise TypeError("target sequence must contain ints (one class index per example)")
        t = torch.tensor(list(target), dtype=torch.long)
    else:
        raise TypeError(f"target must be an int, a sequence of ints or an integer tensor; got {type(target).__name__}")
    if t.numel() != n:
        raise ValueError(f"target must give one class per example ({n}); got {t.numel()}")
    if bool((t < 0).any()):
        raise ValueError("target indices must be non-negative")
    return t


def select_output(out: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The per-example score f_target(x) from a model output of shape (N,), (N, 1) or (N, C)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model must return a tensor; got {type(out).__name__}")
    if target is None:
        if out.ndim == 1:
            return out
        if out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0]
        raise ValueError(
            f"target is required for a model with output shape {tuple(out.shape)} (one score per class); "
            "pass target=<class index or one index per example>"
        )
    if out.ndim != 2:
        raise ValueError(f"with a target, the model output must have shape (N, C); got {tuple(out.shape)}")
    if int(target.max()) >= out.shape[1]:
        raise ValueError(f"target index {int(target.max())} out of range for {out.shape[1]} outputs")
    return out.gather(1, target.to(out.device).view(-1, 1))[:, 0]


def forward(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Call the model, turning a shape/dtype failure into a ``ValueError`` that names the input shape."""
    try:
        return model(x)
    except RuntimeError as err:
        msg = str(err)
        if any(k in msg for k in ("shape", "size", "dimension", "dtype", "expected", "Expected")):
            raise ValueError(
                f"the model rejected inputs of shape {tuple(x.shape)} and dtype {x.dtype}: {msg}"
            ) from err
        raise


def chunk_slices(n: int, chunk_size: int | None) -> Iterator[slice]:
    """Slices covering range(n) in pieces of at most ``chunk_size`` (one piece when ``None``)."""
    step = n if chunk_size is None else max(1, chunk_size)
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def input_gradients(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    target: torch.Tensor | None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients d f_target(x_n) / d x_n for every row, computed in chunks; returns (gradients, scores)."""
    grads, scores = [], []
    for sl in chunk_slices(inputs.shape[0], chunk_size):
        xc = inputs[sl].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            s = select_output(forward(model, xc), None if target is None else target[sl])
            (g,) = torch.autograd.grad(s.sum(), xc)
        grads.append(g.detach())
        scores.append(s.detach())
    return torch.cat(grads), torch.cat(scores)


def _hook_dicts(module: nn.Module) -> list[dict]:
    names = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
        "_forward_hooks_always_called",
    )
    return [getattr(module, n) for n in names if isinstance(getattr(module, n, None), dict)]


@contextlib.contextmanager
def hook_guard(model: Any) -> Iterator[None]:
    """Remove every hook added to ``model``'s modules inside the block, also when the block raises.

    Captum removes its hooks on the success path; a model that raises mid-forward can leave them behind. This
    guard snapshots the hook dictionaries of every submodule and deletes whatever was added. It also silences
    Captum's informational warnings ("Input Tensor 0 did not already require gradients", "Setting backward hooks
    on ReLU activations"), which fire on every call and say nothing the caller can act on.
    """
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    before = [[set(d.keys()) for d in _hook_dicts(m)] for m in modules]
    try:
        with warnings.catch_warnings():
            for pat in (".*did not already require gradients.*", ".*Setting backward hooks.*",
                        ".*Setting forward, backward hooks.*"):
                warnings.filterwarnings("ignore", message=pat, category=UserWarning)
            yield
    finally:
        for m, keys in zip(modules, before):
            for d, k0 in zip(_hook_dicts(m), keys):
                for k in list(d.keys()):
                    if k not in k0:
                        del d[k]


def as_result(t: torch.Tensor) -> torch.Tensor:
    """Detach a result (Captum returns tensors that may still be attached to the graph)."""
    return t.detach()
