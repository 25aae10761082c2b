"""Hessian-vector and Gauss-Newton-vector products for any ``nn.Module`` + loss + batch.

For a model :math:`m(\\theta; x)`, a loss :math:`\\ell(z, y)` and a batch :math:`(x, y)` the training objective is
:math:`f(\\theta) = \\ell(m(\\theta; x), y)`. This module exposes its curvature as symmetric linear operators on the
*flat* parameter vector :math:`\\theta \\in \\mathbb{R}^P` (parameters concatenated in ``named_parameters`` order):

* :class:`HessianOperator`:  :math:`v \\mapsto \\nabla^2 f(\\theta) v` (reverse-over-reverse with ``torch.func``: the
  gradient graph is built once, every product is one backward pass; ``matmat`` vectorises columns with ``vmap``).
* :class:`GaussNewtonOperator`: :math:`v \\mapsto J^\\top \\nabla_z^2 \\ell\\, J v` with :math:`J = \\partial m/\\partial\\theta`
  (the generalized Gauss-Newton matrix, positive semi-definite for convex losses).
* :class:`DenseOperator`: a symmetric matrix seen through the same interface (tests, small problems).

All operators have ``matvec`` (``(P,)``), ``matmat`` (``(P, k)``, batched), ``to_dense`` and ``to_scipy`` (a
``scipy.sparse.linalg.LinearOperator``), and honour ``dtype=torch.float64`` (parameters, buffers and floating batch
tensors are cast; the module itself is never modified).

**BatchNorm / Dropout semantics.** By default (``eval_mode=True``) the model is evaluated in eval mode: BatchNorm uses its
running statistics, so it is a fixed affine map and the Hessian is that of a per-sample-separable function; Dropout is
off, so the function is deterministic. This is the usual convention for curvature diagnostics. With
``eval_mode=False`` the module's *own* mode is used; in train mode BatchNorm normalises with the batch statistics (the
Hessian then includes the coupling through the batch mean and variance) and the running statistics are **not**
updated (buffers are passed as copies).

**Attention.** Fused scaled-dot-product-attention kernels (flash / memory-efficient / cuDNN) have no double backward.
A product through them raises :class:`DoubleBackwardError` explaining the fix: pass ``math_sdpa=True`` (the
operator then runs under ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``) or use a manual attention
implementation.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from gradlab.core import check_tensor, check_type

LossFn = Callable[[Any, Any], torch.Tensor]

_FUSED_ATTENTION_MARKERS = (
    "scaled_dot_product",
    "flash_attention",
    "efficient_attention",
    "cudnn_attention",
    "_fused_sdp",
)


class DoubleBackwardError(RuntimeError):
    """A second-order product went through an op without a double backward (typically fused attention)."""


def _explain(err: BaseException) -> BaseException:
    text = str(err).lower()
    if any(m in text for m in _FUSED_ATTENTION_MARKERS):
        return DoubleBackwardError(
            "Hessian/Gauss-Newton products need double backward, which the fused scaled_dot_product_attention "
            "kernels (flash / memory-efficient / cuDNN) do not implement. Use the math SDPA backend: pass "
            "math_sdpa=True to the curvature operator, or wrap the call in "
            "`with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):` "
            f"(original error: {err})"
        )
    return err


@contextlib.contextmanager
def _guard(math_sdpa: bool) -> Iterator[None]:
    """Run second-order code under the math SDPA backend if asked, and translate fused-attention failures."""
    if math_sdpa:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ctx: contextlib.AbstractContextManager = sdpa_kernel(SDPBackend.MATH)
    else:
        ctx = contextlib.nullcontext()
    try:
        with ctx:
            yield
    except (RuntimeError, NotImplementedError) as err:
        new = _explain(err)
        if new is err:
            raise
        raise new from err


@contextlib.contextmanager
def _module_mode(model: nn.Module, eval_mode: bool) -> Iterator[None]:
    """Temporarily put ``model`` in eval mode (restoring every submodule's own flag afterwards)."""
    if not eval_mode:
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


# ---------------------------------------------------------------------------------------------------------------
# Linear-operator interface
# ---------------------------------------------------------------------------------------------------------------


class CurvatureOperator:
    """A symmetric linear operator on :math:`\\mathbb{R}^P` (``size = P``), applied with ``matvec``/``matmat``."""

    size: int
    dtype: torch.dtype
    device: torch.device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:  # (P, k) -> (P, k)
        raise TypeError(f"{type(self).__name__} must implement _matmat")

    def _check_vec(self, name: str, v: torch.Tensor, ndim: int) -> torch.Tensor:
        check_tensor(name, v, ndim=ndim, floating=True)
        if v.shape[0] != self.size:
            raise ValueError(f"{name} must have {self.size} rows (the number of parameters); got shape {tuple(v.shape)}")
        if not torch.isfinite(v).all():
            raise ValueError(f"{name} contains NaN or inf")
        return v.to(dtype=self.dtype, device=self.device)

    def _checked(self, out: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(out).all():
            raise ValueError(f"{type(self).__name__} produced NaN or inf (the model's loss or outputs are not "
                             "finite at these parameters)")
        return out

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return :math:`A v` for a flat vector ``v`` of shape ``(P,)``; ``ValueError`` if the product is not finite."""
        v = self._check_vec("v", v, 1)
        return self._checked(self._matmat(v[:, None])[:, 0])

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return :math:`A V` for ``V`` of shape ``(P, k)`` (all columns in one vectorised call)."""
        V = self._check_vec("V", V, 2)
        if V.shape[1] == 0:
            return V.clone()
        return self._checked(self._matmat(V))

    def __matmul__(self, other: torch.Tensor) -> torch.Tensor:
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def to_dense(self, chunk: int = 256) -> torch.Tensor:
        """The explicit ``(P, P)`` matrix, built from ``matmat`` on identity columns (small ``P`` only)."""
        eye = torch.eye(self.size, dtype=self.dtype, device=self.device)
        cols = [self._matmat(eye[:, i : i + chunk]) for i in range(0, self.size, chunk)]
        return torch.cat(cols, dim=1)

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in and out) applying this operator."""
        import numpy as np
        from scipy.sparse.linalg import LinearOperator

        def mv(x: Any) -> Any:
            t = torch.as_tensor(np.asarray(x).reshape(self.size, -1), dtype=self.dtype, device=self.device)
            return self._matmat(t).detach().cpu().double().numpy().reshape(np.asarray(x).shape)

        return LinearOperator((self.size, self.size), matvec=mv, matmat=mv, rmatvec=mv, dtype=np.float64)


class DenseOperator(CurvatureOperator):
    """A symmetric ``(P, P)`` matrix as a :class:`CurvatureOperator`."""

    def __init__(self, matrix: torch.Tensor, check_symmetric: bool = True) -> None:
        check_tensor("matrix", matrix, ndim=2, floating=True, finite=True)
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square; got shape {tuple(matrix.shape)}")
        if check_symmetric and not torch.allclose(matrix, matrix.T, rtol=1e-5, atol=1e-8):
            raise ValueError("matrix must be symmetric")
        self.matrix = matrix
        self.size = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.matrix @ V


class FunctionOperator(CurvatureOperator):
    """Wrap a callable ``matmat(V: (P, k)) -> (P, k)`` as a :class:`CurvatureOperator`."""

    def __init__(
        self, matmat: Callable[[torch.Tensor], torch.Tensor], size: int, dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not callable(matmat):
            raise TypeError("matmat must be callable")
        self._fn = matmat
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int (the operator's dimension); got {type(size).__name__} {size!r}")
        self.size = int(size)
        if self.size < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        self.dtype = dtype
        self.device = torch.device(device)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._fn(V)


def as_operator(op: Any) -> CurvatureOperator:
    """Accept a :class:`CurvatureOperator` or a square symmetric tensor and return an operator."""
    if isinstance(op, CurvatureOperator):
        return op
    if isinstance(op, torch.Tensor):
        return DenseOperator(op)
    raise TypeError(f"operator must be a CurvatureOperator or a square torch.Tensor; got {type(op).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# Parameter bookkeeping
# ---------------------------------------------------------------------------------------------------------------


class _Layout:
    """Names, shapes and flat offsets of the differentiated parameters."""

    def __init__(self, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        self.names = [n for n, _ in named]
        self.shapes = [t.shape for _, t in named]
        self.numels = [t.numel() for _, t in named]
        self.size = sum(self.numels)

    def flatten(self, tensors: Mapping[str, torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
        parts = [tensors[n].reshape(*tensors[n].shape[:batch_dims], -1) for n in self.names]
        return torch.cat(parts, dim=-1)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``flat`` is ``(..., P)``; returns views with leading batch dims preserved."""
        lead = flat.shape[:-1]
        chunks = torch.split(flat, self.numels, dim=-1)
        return {n: c.reshape(*lead, *s) for n, c, s in zip(self.names, chunks, self.shapes)}


def _cast(obj: Any, dtype: torch.dtype | None, device: torch.device | None) -> Any:
    if isinstance(obj, torch.Tensor):
        if dtype is not None and obj.is_floating_point():
            obj = obj.to(dtype)
        return obj.to(device) if device is not None else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast(o, dtype, device) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _cast(v, dtype, device) for k, v in obj.items()}
    return obj


def _check_batch_finite(obj: Any, where: str) -> None:
    """Raise ``ValueError`` naming the part of the batch that holds NaN/inf (a curvature of NaN data is NaN)."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            if not torch.isfinite(obj).all():
                raise ValueError(f"{where} contains NaN or inf; curvature of non-finite data is undefined")
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_batch_finite(v, f"{where}[{k!r}]")
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            _check_batch_finite(v, f"{where}[{i}]")


def _split_batch(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            "batch must be a pair (inputs, targets); inputs is a tensor, a tuple of positional model inputs or a "
            "dict of keyword inputs"
        )
    inputs, targets = batch
    _check_batch_finite(inputs, "batch inputs")
    _check_batch_finite(targets, "batch targets")
    if isinstance(inputs, Mapping):
        return (), dict(inputs), targets
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    return args, {}, targets


class _ModelObjective:
    """``f(theta) = loss_fn(model(inputs; theta), targets)`` as a pure function of a parameter dict."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batch: Any,
        params: Iterable[str] | None,
        dtype: torch.dtype | None,
        eval_mode: bool,
        math_sdpa: bool,
    ) -> None:
        check_type("model", model, nn.Module)
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(outputs, targets)")
        named = dict(model.named_parameters())
        if params is None:
            chosen = [n for n, p in named.items() if p.requires_grad]
        else:
            chosen = list(params)
            unknown = [n for n in chosen if n not in named]
            if unknown:
                raise ValueError(f"params names not found in model.named_parameters(): {unknown}")
        if not chosen:
            raise ValueError("the model has no parameters to differentiate (params is empty)")
        device = named[chosen[0]].device
        self.model, self.loss_fn = model, loss_fn
        self.eval_mode, self.math_sdpa = eval_mode, math_sdpa
        self.params = {n: _cast(named[n].detach(), dtype, None) for n in chosen}
        self.fixed = {n: _cast(p.detach(), dtype, None) for n, p in named.items() if n not in self.params}
        self.buffers = {n: _cast(b.detach(), dtype, None) for n, b in model.named_buffers()}
        self.args, self.kwargs, self.targets = _split_batch(_cast(batch, dtype, device))
        self.layout = _Layout(list(self.params.items()))
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device

    def outputs(self, p: Mapping[str, torch.Tensor]) -> Any:
        buffers = {n: b.clone() for n, b in self.buffers.items()}  # never mutate running statistics
        return functional_call(self.model, ({**self.fixed, **p}, buffers), self.args, self.kwargs)

    def loss(self, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = self.loss_fn(self.outputs(p), self.targets)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor (use reduction='mean' or 'sum')")
        return out.reshape(())

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        with _module_mode(self.model, self.eval_mode), _guard(self.math_sdpa):
            yield


class _ModelOperator(CurvatureOperator):
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batch: Any,
        *,
        params: Iterable[str] | None = None,
        dtype: torch.dtype | None = None,
        eval_mode: bool = True,
        math_sdpa: bool = False,
        vectorize: bool = True,
    ) -> None:
        self.objective = _ModelObjective(model, loss_fn, batch, params, dtype, eval_mode, math_sdpa)
        self.layout = self.objective.layout
        self.size = self.layout.size
        self.dtype, self.device = self.objective.dtype, self.objective.device
        self.vectorize = bool(vectorize)
        self._loss: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    @property
    def param_names(self) -> list[str]:
        """Names of the differentiated parameters, in flat-vector order."""
        return list(self.layout.names)

    @property
    def parameters_flat(self) -> torch.Tensor:
        """The current parameters as one flat vector (in the operator's dtype)."""
        return self.layout.flatten(self.objective.params)

    def _value_and_grad(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._grad is None or self._loss is None:
            with self.objective.context():
                g, loss = torch.func.grad_and_value(self.objective.loss)(self.objective.params)
            self._grad = self.layout.flatten(g).detach()
            self._loss = loss.detach()
        assert self._loss is not None
        return self._loss, self._grad

    @property
    def loss(self) -> torch.Tensor:
        """:math:`f(\\theta)` on the batch."""
        return self._value_and_grad()[0]

    @property
    def gradient(self) -> torch.Tensor:
        """:math:`\\nabla f(\\theta)` on the batch, flat ``(P,)``."""
        return self._value_and_grad()[1]

    def _apply(self, single: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], V: torch.Tensor) -> torch.Tensor:
        rows = V.T  # (k, P)
        with self.objective.context():
            if self.vectorize and rows.shape[0] > 1:
                out = vmap(single)(self.layout.unflatten(rows))
                return self.layout.flatten(out, batch_dims=1).T.detach()
            cols = [self.layout.flatten(single(self.layout.unflatten(r))) for r in rows]
            return torch.stack(cols, dim=1).detach()

    def apply(self, vector: Any) -> Any:
        """Apply to a flat vector ``(P,)``, a ``(P, k)`` matrix, a dict ``name -> tensor`` or a list of tensors."""
        if isinstance(vector, torch.Tensor):
            return self @ vector
        if isinstance(vector, Mapping):
            missing = [n for n in self.layout.names if n not in vector]
            if missing:
                raise ValueError(f"vector is missing parameters {missing}")
            out = self.matvec(self.layout.flatten({n: vector[n] for n in self.layout.names}))
            return self.layout.unflatten(out)
        if isinstance(vector, (list, tuple)):
            if len(vector) != len(self.layout.names):
                raise ValueError(f"vector must hold {len(self.layout.names)} tensors (one per parameter); got {len(vector)}")
            flat = self.layout.flatten(dict(zip(self.layout.names, vector)))
            return list(self.layout.unflatten(self.matvec(flat)).values())
        raise TypeError(f"vector must be a tensor, a dict of tensors or a list of tensors; got {type(vector).__name__}")


class HessianOperator(_ModelOperator):
    """:math:`v \\mapsto \\nabla^2_\\theta\\, \\ell(m(\\theta; x), y)\\, v` for a model, a loss and a batch.

    Args:
        model: any ``nn.Module``; its parameters are read (detached), never modified.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (e.g. ``nn.CrossEntropyLoss()``).
        batch: ``(inputs, targets)``; ``inputs`` is a tensor, a tuple of positional model inputs or a dict of
            keyword inputs (e.g. ``{"input_ids": ..., "attention_mask": ...}``).
        params: names of the parameters to differentiate (default: all with ``requires_grad``); the others are fixed.
        dtype: cast parameters, buffers and floating batch tensors (``torch.float64`` for reference-grade products).
        eval_mode: evaluate in eval mode (BatchNorm running statistics, no Dropout); see the module docstring.
        math_sdpa: run under the math scaled-dot-product-attention backend (needed for attention layers).
        vectorize: use ``vmap`` over the columns of ``matmat`` (set ``False`` for ops without batching rules).

    The operator is a snapshot: parameters, buffers and batch are captured (detached) at construction, so later
    training of ``model`` does not change it; build a new operator for a new point. The gradient graph is built once
    (lazily); each product is one backward pass through it.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batch: Any, **kwargs: Any) -> None:
        super().__init__(model, loss_fn, batch, **kwargs)
        self._vjp_fn: Callable | None = None

    def _build(self) -> Callable:
        if self._vjp_fn is None:
            obj = self.objective
            with obj.context():
                g, vjp_fn, loss = vjp(lambda p: torch.func.grad_and_value(obj.loss)(p), obj.params, has_aux=True)
            self._grad = self.layout.flatten(g).detach()
            self._loss = loss.detach()
            self._vjp_fn = vjp_fn
        return self._vjp_fn

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        vjp_fn = self._build()
        return self._apply(lambda v: vjp_fn(v)[0], V)


class GaussNewtonOperator(_ModelOperator):
    """Generalized Gauss-Newton products :math:`v \\mapsto J^\\top \\nabla_z^2\\ell(z, y)\\, J v`, :math:`z = m(\\theta; x)`.

    Same arguments as :class:`HessianOperator`. The model output must be a tensor. ``J v`` is a forward-mode
    product (``torch.func.jvp``); the loss Hessian in output space and ``J^T`` reuse graphs built once.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batch: Any, **kwargs: Any) -> None:
        super().__init__(model, loss_fn, batch, **kwargs)
        self._parts: tuple[Callable, Callable] | None = None

    def _build(self) -> tuple[Callable, Callable]:
        if self._parts is None:
            obj = self.objective
            with obj.context():
                out, jt_fn = vjp(obj.outputs, obj.params)
                if not isinstance(out, torch.Tensor):
                    raise TypeError("GaussNewtonOperator needs a model whose output is a single tensor")
                out = out.detach()

                def loss_of_out(z: torch.Tensor) -> torch.Tensor:
                    val = obj.loss_fn(z, obj.targets)
                    if not isinstance(val, torch.Tensor) or val.numel() != 1:
                        raise ValueError("loss_fn must return a scalar tensor")
                    return val.reshape(())

                _, hz_fn = vjp(grad(loss_of_out), out)
            self._parts = (jt_fn, hz_fn)
        return self._parts

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        jt_fn, hz_fn = self._build()
        obj = self.objective

        def single(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            _, jv = jvp(obj.outputs, (obj.params,), (v,))
            return jt_fn(hz_fn(jv)[0])[0]

        return self._apply(single, V)


def hessian_vector_product(model: nn.Module, loss_fn: LossFn, batch: Any, vector: Any, **kwargs: Any) -> Any:
    """One-shot :math:`\\nabla^2 f\\, v` (see :class:`HessianOperator` for ``kwargs``).

    ``vector`` may be flat ``(P,)``, a ``(P, k)`` matrix (batched), a dict ``name -> tensor`` or a list of tensors
    in parameter order; the result has the same form.
    """
    return HessianOperator(model, loss_fn, batch, **kwargs).apply(vector)


def gauss_newton_vector_product(model: nn.Module, loss_fn: LossFn, batch: Any, vector: Any, **kwargs: Any) -> Any:
    """One-shot generalized Gauss-Newton product :math:`J^\\top \\nabla_z^2 \\ell\\, J v` (see :class:`GaussNewtonOperator`)."""
    return GaussNewtonOperator(model, loss_fn, batch, **kwargs).apply(vector)
