"""Shared plumbing of the attribution methods: the package's validation layer, targets, chunked gradients, hooks.

Every method in :mod:`gradlab.explain` follows Captum's call shape ``method(model).attribute(inputs, target=...)``
and the guarantees listed in the package docstring (eval mode checked, model never mutated, hooks always removed,
internal batching with ``chunk_size``, the NaN/inf policy). The helpers that implement those guarantees live here,
built on :mod:`gradlab.core.validation`; every public entry point of the package checks its arguments with them, so
a bad argument gives one kind of message: a ``ValueError``/``TypeError`` that names the argument, what was expected
and what was received.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from gradlab.core.validation import check_finite, check_int, check_type

TargetType = int | Sequence[int] | torch.Tensor | None

# ------------------------------------------------------------------------------------------------ plain arguments


def check_bool(name: str, value: Any) -> bool:
    """``value`` must be a bool (not 0/1, not a string): ``TypeError`` naming ``name`` otherwise."""
    return check_type(name, value, bool)


def check_callable(name: str, value: Any) -> Callable:
    """``value`` must be callable: ``TypeError`` naming ``name`` otherwise."""
    if not callable(value):
        raise TypeError(f"{name} must be callable; got {type(value).__name__}")
    return value


def check_number(name: str, value: Any) -> float:
    """A finite real number (bools and strings refused) as float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    check_finite(name, float(value))
    return float(value)


def check_pair(name: str, value: Any, strict: bool = True) -> tuple[float, float]:
    """A pair ``(low, high)`` of finite numbers with ``low < high`` (``low <= high`` when not ``strict``)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high); got {value!r}")
    lo, hi = check_number(f"{name}[0]", value[0]), check_number(f"{name}[1]", value[1])
    if not (lo < hi if strict else lo <= hi):
        raise ValueError(f"{name} must satisfy low {'<' if strict else '<='} high; got {tuple(value)!r}")
    return lo, hi


def check_int_sequence(name: str, value: Any, minimum: int | None = None, maximum: int | None = None,
                       length: int | None = None) -> tuple[int, ...]:
    """A sequence (or 1-D integer tensor) of ints within bounds; a bare int or a float is refused."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a sequence of ints or a 1-D integer tensor; got a tensor of shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}")
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray, range)):
        raise TypeError(f"{name} must be a sequence of ints; got {type(value).__name__}")
    out = tuple(check_int(f"{name}[{i}]", v, minimum, maximum) for i, v in enumerate(value))
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries; got {len(out)}")
    return out


# ------------------------------------------------------------------------------------------------ tensors


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)} and dtype {t.dtype}"


def check_finite_tensor(name: str, t: torch.Tensor) -> torch.Tensor:
    """``ValueError`` naming ``name`` and the first bad example if a floating tensor holds NaN or inf."""
    if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(torch.isfinite(t).all()):
        bad = ~torch.isfinite(t)
        where = ""
        if t.ndim >= 1:
            rows = bad.reshape(t.shape[0], -1).any(1).nonzero().flatten().tolist()
            where = f" (in {len(rows)} of {t.shape[0]} rows along the first dimension, first at index {rows[0]})"
        kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(f"{name} contains {kind}{where}; every value must be finite")
    return t


def check_real_tensor(name: str, value: Any, finite: bool = True, min_ndim: int = 0) -> torch.Tensor:
    """A real (integer or floating, not bool/complex) tensor, finite when ``finite``, with >= ``min_ndim`` dims."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers (an integer or floating dtype); got dtype {value.dtype}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions; got shape {tuple(value.shape)}")
    if finite:
        check_finite_tensor(name, value)
    return value


def check_binary_mask(name: str, value: Any) -> torch.Tensor:
    """A boolean tensor, or a real tensor holding only 0 and 1 (returned as bool)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a boolean tensor (or hold only 0/1); got {type(value).__name__}")
    if value.dtype == torch.bool:
        return value
    if value.is_complex():
        raise TypeError(f"{name} must be a boolean tensor (or hold only 0/1); got dtype {value.dtype}")
    check_finite_tensor(name, value)
    if not bool(((value == 0) | (value == 1)).all()):
        vals = torch.unique(value.detach())[:5].tolist()
        raise ValueError(f"{name} must be boolean or hold only 0 and 1; got values such as {vals}")
    return value.bool()


def check_batch(name: str, t: torch.Tensor, n: int, other: str = "inputs") -> torch.Tensor:
    """The first dimension of ``t`` must be ``n`` (the batch size of ``other``)."""
    if t.ndim == 0 or t.shape[0] != n:
        raise ValueError(f"{name} must have one row per example of {other} (batch size {n}); got shape "
                         f"{tuple(t.shape)}")
    return t


def check_class_labels(name: str, labels: Any, n: int, num_classes: int | None = None) -> torch.Tensor:
    """Integer class labels of shape (n,), each in [0, num_classes) when ``num_classes`` is known."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be an integer torch.Tensor of shape ({n},); got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices (e.g. torch.long); got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one label per input); got shape {tuple(labels.shape)}")
    if n and int(labels.min()) < 0:
        raise ValueError(f"{name} must be >= 0; got {int(labels.min())}")
    if n and num_classes is not None and int(labels.max()) >= num_classes:
        raise ValueError(f"{name} holds class {int(labels.max())} but the model has {num_classes} outputs "
                         f"(valid: 0..{num_classes - 1})")
    return labels.long()


# ------------------------------------------------------------------------------------------------ models, inputs


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
        raise ValueError(f"{name} has an empty batch dimension (shape {tuple(inputs.shape)})")
    check_finite_tensor(name, inputs)
    dt = model_dtype(model)
    if dt is not None and inputs.dtype != dt:
        raise TypeError(f"{name} has dtype {inputs.dtype} but the model's parameters are {dt}; cast one of them")
    return inputs


def check_chunk_size(chunk_size: int | None) -> int | None:
    """``None`` (one pass) or a positive int: how many (expanded) rows go through the model at once."""
    if chunk_size is None:
        return None
    return check_int("chunk_size", chunk_size, minimum=1)


def normalize_target(target: TargetType, n: int, num_outputs: int | None = None,
                     name: str = "target") -> torch.Tensor | None:
    """Turn ``target`` into a LongTensor of shape (n,) or ``None`` (single-output models).

    Accepts an int (same class for every example), a sequence of n ints or an integer tensor of shape (), (1,) or
    (n,). With ``num_outputs`` every index must be < ``num_outputs``.
    """
    if target is None:
        return None
    expected = f"an int, a sequence of {n} ints or an integer tensor of shape () or ({n},)"
    if isinstance(target, (bool, np.bool_)):
        raise TypeError(f"{name} must be {expected}; got bool")
    if isinstance(target, numbers.Integral):
        t = torch.full((n,), int(target), dtype=torch.long)
    elif isinstance(target, (torch.Tensor, np.ndarray)):
        tt = torch.as_tensor(target)
        if tt.is_floating_point() or tt.is_complex() or tt.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices; got a tensor of dtype {tt.dtype}")
        if tt.ndim > 1 or (tt.ndim == 1 and tt.numel() not in (1, n)):
            raise ValueError(f"{name} must give one class per example ({n}): {expected}; got shape "
                             f"{tuple(tt.shape)}")
        t = tt.detach().to("cpu", torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n).clone()
    elif isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        bad = [v for v in target if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral)]
        if bad:
            raise TypeError(f"{name} sequence must contain ints (one class index per example); got "
                            f"{type(bad[0]).__name__}")
        t = torch.tensor([int(v) for v in target], dtype=torch.long)
        if t.numel() != n:
            raise ValueError(f"{name} must give one class per example ({n}); got {t.numel()}")
    else:
        raise TypeError(f"{name} must be {expected}; got {type(target).__name__}")
    if bool((t < 0).any()):
        raise ValueError(f"{name} indices must be non-negative; got {int(t.min())}")
    if num_outputs is not None:
        check_target_range(t, num_outputs, name)
    return t


def check_target_range(t: torch.Tensor | None, num_outputs: int, name: str = "target") -> None:
    """Every index of ``t`` must be < ``num_outputs``."""
    if t is not None and t.numel() and int(t.max()) >= num_outputs:
        raise ValueError(f"{name} index {int(t.max())} out of range for {num_outputs} outputs "
                         f"(valid: 0..{num_outputs - 1})")


# ------------------------------------------------------------------------------------------------ model outputs


def check_model_output(out: Any, batch: int | None, differentiable: bool = False,
                       name: str = "the model's output") -> torch.Tensor:
    """The model's output must be a real tensor with one row per input row, finite everywhere.

    ``differentiable`` additionally asks for a floating dtype (an integer output, e.g. from ``argmax``, has no
    gradient). This is the check behind the package's NaN/inf policy for model outputs.
    """
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must be a tensor; got {type(out).__name__} (the model must return one tensor)")
    if out.is_complex() or out.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor; got dtype {out.dtype}")
    if differentiable and not out.is_floating_point():
        raise ValueError(f"{name} has dtype {out.dtype}: an integer output (e.g. from argmax) has no gradient, so it "
                         "does not depend differentiably on its input; return floating scores")
    if batch is not None and (out.ndim == 0 or out.shape[0] != batch):
        raise ValueError(f"{name} must have one row per input row: {batch} rows expected; got shape "
                         f"{tuple(out.shape)}")
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        kind = "NaN" if bool(torch.isnan(out).any()) else "inf"
        rows = (~torch.isfinite(out)).reshape(out.shape[0], -1).any(1).nonzero().flatten().tolist() if out.ndim else [0]
        raise ValueError(f"{name} contains {kind} (output shape {tuple(out.shape)}, {len(rows)} row(s), first at "
                         f"index {rows[0]}); every model output must be finite: a score, gradient or accuracy of a "
                         "non-finite output is undefined, so nothing is returned")
    return out


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
    check_target_range(target, out.shape[1])
    return out.gather(1, target.to(out.device).view(-1, 1))[:, 0]


def forward(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
            differentiable: bool = False) -> torch.Tensor:
    """Call the model and check its output (:func:`check_model_output`).

    A shape/dtype failure inside the model becomes a ``ValueError`` that names the input shape.
    """
    try:
        out = model(x)
    except RuntimeError as err:
        msg = str(err)
        if any(k in msg for k in ("shape", "size", "dimension", "dtype", "expected", "Expected")):
            raise ValueError(
                f"the model rejected inputs of shape {tuple(x.shape)} and dtype {x.dtype}: {msg}"
            ) from err
        raise
    return check_model_output(out, x.shape[0], differentiable)


_NO_GRAD_MESSAGES = ("does not require grad", "not have been used in the graph", "One of the differentiated Tensors")


def not_differentiable(wrt: str = "`inputs`") -> ValueError:
    """The error for a model whose output has no gradient path to ``wrt``."""
    return ValueError(
        f"the model's output does not depend differentiably on {wrt}: no gradient flows back to it (the model "
        "detaches it, rounds it, takes an argmax, or runs under torch.no_grad()); gradient-based explanations "
        "need a differentiable path, perturbation methods (Occlusion, Lime, KernelShap) do not"
    )


@contextlib.contextmanager
def autograd_errors(wrt: str = "`inputs`") -> Iterator[None]:
    """Turn autograd's "does not require grad" / "not used in the graph" errors into :func:`not_differentiable`."""
    try:
        yield
    except RuntimeError as err:
        if any(k in str(err) for k in _NO_GRAD_MESSAGES):
            raise not_differentiable(wrt) from err
        raise


def grad_wrt(score: torch.Tensor, x: torch.Tensor, wrt: str = "`inputs`") -> torch.Tensor:
    """``d score.sum() / d x``, raising :func:`not_differentiable` when ``score`` has no gradient path to ``x``."""
    if not score.requires_grad:
        raise not_differentiable(wrt)
    (g,) = torch.autograd.grad(score.sum(), x, allow_unused=True)
    if g is None:
        raise not_differentiable(wrt)
    return g


def probe_model(model: Callable, example: torch.Tensor, target: torch.Tensor | None, differentiable: bool,
                name: str = "inputs") -> int | None:
    """One forward pass on ``example`` (a batch of one), with a backward pass when ``differentiable``.

    Checks the output (:func:`check_model_output`), that ``target`` selects one of its columns and, for gradient
    methods, that the selected score depends differentiably on the input. Returns the number of outputs (C for
    an (N, C) output, ``None`` for (N,)). Hooks added by the model are removed.
    """
    x1 = example.detach().clone().requires_grad_(differentiable)
    with hook_guard(model), torch.set_grad_enabled(differentiable):
        out = forward(model, x1, differentiable)
        c = out.shape[1] if out.ndim == 2 else None
        if target is not None and c is not None:
            check_target_range(target, c)
        s = select_output(out, None if target is None else target[:1])
        if differentiable:
            grad_wrt(s, x1, f"`{name}`")
    return c


class _CheckedFunction:
    """A function model whose every output is checked (the :class:`nn.Module` case uses a forward hook)."""

    def __init__(self, fn: Callable, differentiable: bool):
        self.fn, self.differentiable = fn, differentiable

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.fn(x, *args, **kwargs)
        return check_model_output(out, x.shape[0] if isinstance(x, torch.Tensor) and x.ndim else None,
                                  self.differentiable)


@contextlib.contextmanager
def watch_outputs(model: Callable, differentiable: bool = False) -> Iterator[Callable]:
    """Yield a callable equal to ``model`` whose every output is checked with :func:`check_model_output`.

    For an ``nn.Module`` this is the module itself with a forward hook on it (so Captum's module hooks still see
    the module), removed on exit; a plain function is wrapped. Used around every Captum call, so the perturbed,
    noisy and interpolated batches a method evaluates obey the same NaN/inf policy as the inputs.
    """
    if not isinstance(model, nn.Module):
        yield _CheckedFunction(model, differentiable)
        return

    def hook(mod, args, out):
        x = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].ndim else None
        check_model_output(out, None if x is None else x.shape[0], differentiable)

    handle = model.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


def check_attribution(result: Any, method: str, wrt: str = "`inputs`") -> Any:
    """An attribution that comes out non-finite (an infinite gradient, say) raises instead of being returned."""
    parts = result if isinstance(result, tuple) else (result,)
    # a tuple of attributions (tuple inputs), possibly with a convergence delta: ((a_1, ..., a_k), delta)
    parts = tuple(q for p in parts for q in (p if isinstance(p, tuple) else (p,)))
    for r in parts:
        if isinstance(r, torch.Tensor) and r.is_floating_point() and not bool(torch.isfinite(r).all()):
            rows = (~torch.isfinite(r)).reshape(r.shape[0], -1).any(1).nonzero().flatten().tolist() if r.ndim else [0]
            raise ValueError(
                f"{method} produced NaN or inf for {len(rows)} example(s) (first: index {rows[0]}): the model's "
                f"gradient or output with respect to {wrt} is not finite there (e.g. sqrt or log at 0), so no "
                "attribution is returned"
            )
    return result


# ------------------------------------------------------------------------------------------------ batching, hooks


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
            s = select_output(forward(model, xc, differentiable=True), None if target is None else target[sl])
            g = grad_wrt(s, xc)
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
