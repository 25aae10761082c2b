r"""TrAct: training the first layer's pre-activations instead of its weights (Petersen, Borgelt & Ermon,
NeurIPS 2024, arXiv 2410.23970).

For a first layer :math:`Z = X W^\top` (``nn.Linear``) or a convolution seen as one on its unfolded patches,
the ordinary weight gradient :math:`\nabla_W = G^\top X` is proportional to the pixel values, so low-contrast
inputs barely move the first layer. TrAct takes a gradient step on the pre-activations, :math:`Z^\star = Z -
\eta G`, and solves a ridge-regularised least-squares problem for the weights that reproduce :math:`Z^\star`.
Its closed form replaces the weight gradient by

.. math::

    \nabla_W^{\mathrm{TrAct}} = G^\top X \left(\tfrac{1}{b} X^\top X + \lambda I_n\right)^{-1}
    \qquad (X \in \mathbb{R}^{b\times n},\ G = \partial L/\partial Z \in \mathbb{R}^{b\times m}),

or, when :math:`b < n`, the equal (push-through identity) :math:`b\times b` form

.. math::

    \nabla_W^{\mathrm{TrAct}} = G^\top \left(\tfrac{1}{b} X X^\top + \lambda I_b\right)^{-1} X .

The result is handed to any optimizer unchanged. For a convolution, the rows of :math:`X` are the patches of
``unfold(x)`` (b = batch × output positions, n = C·kh·kw). The bias gradient, the input gradient and every other
layer are unchanged; the forward pass is the wrapped layer's forward. The method is stateless (current batch
only). Default :math:`\lambda = 0.1`, the paper's only hyperparameter.

Implementation notes (differences from the official ``TrAct`` wrapper, which rebuilds a ``Conv2d`` from
``kernel_size``/``stride``/``padding`` only):

* ``dilation``, ``padding_mode`` (reflect/replicate/circular) and string padding (``'same'``, ``'valid'``) are
  honoured; ``groups > 1`` raises ``ValueError`` (the patch matrix would differ per group).
* The linear systems are solved (Cholesky, LU as a fallback), never inverted, in at least float32 (float64
  stays float64), then cast back to the weight's dtype.
* For a convolution, :math:`X^\top X` is one GEMM over the patch matrix, which is one strided copy of the padded
  input rather than ``F.unfold``, whose CPU kernel loops over the batch. :math:`G^\top X` is ATen's convolution
  weight gradient (oneDNN on the CPU, together with the input and bias gradients), except for a small CPU layer
  whose input needs no gradient (a first layer, below ``_GEMM_GRAD_MAX_MACS`` multiply-adds), where it is one more
  GEMM on the patch matrix and the bias gradient a sum: ATen's call costs ~0.3 ms there whatever it computes,
  as much as the rest of the digits CNN's backward pass. Measured in ``benchmarks/training.py --only tract``.
* On the CPU the patch matrix is written into a buffer the wrapper keeps between steps (n × b floats, as large as
  the temporary it replaces; the peak memory is unchanged): a fresh multi-megabyte allocation per step is a fresh
  ``mmap`` whose pages fault on first touch, which was most of the measured overhead. Backward passes through one
  wrapper therefore must not run at the same time on two threads (backward passes of one graph, and of graphs run
  one after the other, are fine).
* :math:`\lambda` is not scale-free: for inputs with :math:`\tfrac1b X^\top X \ll \lambda` TrAct behaves like the
  plain gradient times :math:`1/\lambda`, i.e. partly like a first-layer learning-rate boost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from gradlab.core.validation import check_positive

__all__ = ["TrAct", "tract_weight_grad"]


def tract_weight_grad(x: torch.Tensor, g: torch.Tensor, lambda_: float = 0.1) -> torch.Tensor:
    r"""The TrAct weight gradient :math:`G^\top X (\tfrac1b X^\top X + \lambda I)^{-1}` for ``x`` (b×n) and
    ``g`` (b×m), as an m×n tensor of ``x``'s dtype.

    Uses the n×n system when :math:`b \ge n` and the b×b form :math:`G^\top (\tfrac1b XX^\top + \lambda I)^{-1} X`
    when :math:`b < n`; both are solved in at least float32.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(g, torch.Tensor):
        raise TypeError(f"x and g must be torch.Tensors; got {type(x).__name__} and {type(g).__name__}")
    if x.ndim != 2 or g.ndim != 2 or x.shape[0] != g.shape[0]:
        raise ValueError(f"x must be b×n and g b×m with the same b; got shapes {tuple(x.shape)} and {tuple(g.shape)}")
    lam = check_positive("lambda_", lambda_)
    return _tract_grad(x, g, lam).to(x.dtype)


def _spd_solve(a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``a @ out = rhs`` for symmetric positive-definite ``a`` (Cholesky; LU if Cholesky fails)."""
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, chol)
    return torch.linalg.solve(a, rhs)


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dt = torch.float32
    for t in tensors:
        dt = torch.promote_types(dt, t.dtype)
    return dt


def _apply_right_inverse(gtx: torch.Tensor, gram: torch.Tensor, b: int, lam: float) -> torch.Tensor:
    """(G^T X) (gram / b + lam I)^-1 for the m×n ordinary gradient and the n×n Gram matrix X^T X."""
    a = gram / b
    a.diagonal().add_(lam)
    return _spd_solve(a, gtx.T).T  # (G^T X) A^{-1} = (A^{-1} (G^T X)^T)^T since A is symmetric


def _tract_grad(x: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    b, n = x.shape
    m = g.shape[1]
    work = _work_dtype(x, g)
    if b == 0:
        return torch.zeros(m, n, dtype=work, device=x.device)
    x = x.to(work)
    g = g.to(work)
    if b >= n:
        return _apply_right_inverse(g.T @ x, x.T @ x, b, lam)
    k = x @ x.T
    k.div_(b).diagonal().add_(lam)
    return g.T @ _spd_solve(k, x)


class _Workspace:
    """A buffer kept between steps for the patch matrix (n × b floats), so that each backward writes into memory
    already mapped: a fresh multi-megabyte allocation per step is a fresh ``mmap`` whose first touch page-faults,
    which measured as most of TrAct's extra step time on the CPU (``benchmarks/training.py --only tract``)."""

    def __init__(self) -> None:
        self.buf: torch.Tensor | None = None

    def get(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        buf = self.buf
        numel = 1
        for d in shape:
            numel *= d
        if buf is None or buf.dtype != like.dtype or buf.device != like.device or buf.numel() < numel:
            buf = self.buf = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf[:numel].view(shape)


def _patch_matrix(xpad: torch.Tensor, geo: "_ConvGeometry", out_hw: torch.Size,
                  workspace: _Workspace | None = None) -> torch.Tensor:
    """The transposed patch matrix :math:`X^\top` (n × b, n = C·kh·kw in ``unfold``'s (c, i, j) order, b = B·Ho·Wo)
    of the explicitly padded input ``xpad`` (B×C×H×W): one strided view of ``xpad`` and one copy, no per-sample loop
    (``F.unfold``'s CPU kernel loops over the batch), so that :math:`X^\top X` is a single GEMM."""
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel_size, geo.stride, geo.dilation
    ho, wo = int(out_hw[0]), int(out_hw[1])
    xpad = xpad.contiguous()
    nb, c, hp, wp = xpad.shape
    # view [c, i, j, batch, y, x] = xpad[batch, c, i*dh + y*sh, j*dw + x*sw], then one strided copy
    taps = xpad.as_strided((c, kh, kw, nb, ho, wo), (hp * wp, dh * wp, dw, c * hp * wp, sh * wp, sw))
    shape = (c, kh, kw, nb, ho, wo)
    out = torch.empty(shape, dtype=xpad.dtype, device=xpad.device) if workspace is None else workspace.get(shape, xpad)
    out.copy_(taps)
    return out.view(c * kh * kw, nb * ho * wo)


@dataclass(frozen=True)
class _ConvGeometry:
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    conv_padding: tuple[int, int] | str  # what F.conv2d receives (the layer's own argument)
    pad: tuple[int, int, int, int]  # explicit zero padding (left, right, top, bottom) that conv_padding means


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """PyTorch's ``padding='same'``: total d·(k−1) per dimension, the odd pixel on the right/bottom."""
    out = []
    for k, d in zip(reversed(kernel), reversed(dilation)):  # width first, as F.pad wants
        total = d * (k - 1)
        out += [total // 2, total - total // 2]
    return tuple(out)  # type: ignore[return-value]


class _TrActLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lam: float) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.lam = lam
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        n, m = weight.shape[1], weight.shape[0]
        g2 = grad_out.reshape(-1, m)
        if ctx.needs_input_grad[0]:
            gx = grad_out @ weight
        if ctx.needs_input_grad[1]:
            gw = _tract_grad(x.reshape(-1, n), g2, ctx.lam).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb, None


# Below this many multiply-adds (n·b·m), a CPU convolution's G^T X is one GEMM on the patch matrix instead of ATen's
# convolution backward, whose oneDNN call costs ~0.3 ms however small the layer (measured on the development CPU,
# 1 thread: digits' 1->16 3x3 conv on 64 8x8 images, 0.6 M: GEMM 0.07 ms + bias sum 0.02 ms vs 0.33 ms; CIFAR's 3->32
# on 64 32x32 images, 57 M: GEMM 6.1 ms vs 3.7 ms; the two cross near 4 M)
_GEMM_GRAD_MAX_MACS = 4_000_000


class _TrActConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lam: float,
                geo: _ConvGeometry, workspace: _Workspace | None = None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.lam = lam
        ctx.geo = geo
        ctx.workspace = workspace
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, geo.stride, geo.conv_padding, geo.dilation, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        geo: _ConvGeometry = ctx.geo
        pl, pr, pt, pb = geo.pad
        if pl == pr and pt == pb:
            xp, sym = x, (pt, pl)
        else:  # asymmetric 'same': pad explicitly, then the convolution has no padding
            xp, sym = F.pad(x, geo.pad), (0, 0)
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], \
            ctx.has_bias and ctx.needs_input_grad[2]
        m = weight.shape[0]
        work = _work_dtype(x, grad_out)
        cols = None
        if need_w:
            xpad = F.pad(x, geo.pad) if any(geo.pad) else x
            cols = _patch_matrix(xpad.to(work), geo, grad_out.shape[-2:], ctx.workspace)  # n × b, (c, i, j) rows
        need_gtx = cols is not None and cols.shape[1] >= cols.shape[0] > 0
        gxp = gtx = gb = None
        if need_gtx and not need_x and x.device.type == "cpu" and cols.numel() * m <= _GEMM_GRAD_MAX_MACS:
            # small first layer on the CPU: G^T X is one GEMM on the patch matrix already built, the bias gradient
            # one sum -- ATen's convolution backward costs ~0.3 ms per call there whatever it computes
            b = cols.shape[1]
            gtx = grad_out.to(work).transpose(0, 1).reshape(m, b) @ cols.T  # rows of G: (batch, row, col)
            if need_b:
                gb = grad_out.sum((0, 2, 3))
        else:
            # ATen's convolution backward gives the input gradient, G^T X (the ordinary weight gradient) and the bias
            # gradient in one call, as for a plain Conv2d (one pass over grad_out); in low precision G^T X is
            # computed separately in the working dtype
            same_dtype = x.dtype == work and grad_out.dtype == work and weight.dtype == work
            mask = (need_x, need_gtx and same_dtype, need_b)
            if any(mask):
                gxp, gtx, gb = torch.ops.aten.convolution_backward(
                    grad_out, xp, weight, [m] if need_b else None, list(geo.stride), list(sym), list(geo.dilation),
                    False, [0, 0], 1, mask)
            if need_gtx and not same_dtype:
                gtx = torch.ops.aten.convolution_backward(
                    grad_out.to(work), xp.to(work), weight.to(work), None, list(geo.stride), list(sym),
                    list(geo.dilation), False, [0, 0], 1, (False, True, False))[1]
        gx = gxp if gxp is None or xp is x else gxp[..., pt:pt + x.shape[-2], pl:pl + x.shape[-1]]
        gw = None
        if need_w:
            n, b = cols.shape
            if b == 0:
                gw = torch.zeros_like(weight)
            elif need_gtx:
                gw = _apply_right_inverse(gtx.reshape(m, n).to(work), cols @ cols.T, b, ctx.lam)
            else:  # b < n: the b×b form, on the patch rows X = cols^T and G (b × m, rows (batch, row, col))
                g_rows = grad_out.to(work).transpose(0, 1).reshape(m, b).T
                gw = _tract_grad(cols.T, g_rows, ctx.lam)
            gw = gw.to(weight.dtype).reshape(weight.shape)
        return gx, gw, gb, None, None, None


class TrAct(nn.Module):
    r"""Wrap a first-layer ``nn.Linear`` or ``nn.Conv2d`` so that its weight gradient becomes TrAct's
    :math:`G^\top X (\tfrac1b X^\top X + \lambda I)^{-1}` (arXiv 2410.23970, Fig. 2).

    The wrapper registers the layer's own ``weight`` and ``bias`` Parameters (the same objects, so an optimizer
    built on either sees the same tensors and ``state_dict`` keys stay ``weight``/``bias``) and computes the
    layer's forward unchanged; only the weight gradient differs. Use it on the first layer only: on a layer
    whose inputs are learned features it is a different method.

    Args:
        layer: an ``nn.Linear`` or an ``nn.Conv2d`` with ``groups == 1`` (any stride, dilation, padding,
            string padding or ``padding_mode``). Subclasses that override ``forward`` are rejected.
        lambda_: the ridge parameter :math:`\lambda > 0` (default 0.1).

    Raises:
        TypeError: ``layer`` is another module type (or overrides ``forward``).
        ValueError: ``groups > 1``, uninitialised (lazy) parameters, or ``lambda_`` not finite and > 0.

    Example::

        model.conv1 = TrAct(model.conv1)   # then train as usual, with any optimizer
    """

    def __init__(self, layer: nn.Module, lambda_: float = 0.1) -> None:
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"layer must be an nn.Linear or nn.Conv2d; got {type(layer).__name__}")
        base = nn.Linear if isinstance(layer, nn.Linear) else nn.Conv2d
        overridden = [f for f in ("forward", "_conv_forward") if hasattr(base, f)
                      and getattr(type(layer), f) is not getattr(base, f)]
        if overridden:
            raise TypeError(f"layer's class {type(layer).__name__} overrides {overridden}; TrAct can only wrap the "
                            "plain nn.Linear / nn.Conv2d forward")
        if isinstance(layer.weight, nn.parameter.UninitializedParameter):
            raise ValueError("layer has uninitialised (lazy) parameters; run one forward pass before wrapping it")
        lam = check_positive("lambda_", lambda_)
        if base is nn.Conv2d and layer.groups != 1:
            raise ValueError(f"layer.groups must be 1 for TrAct (one patch matrix for all filters); got {layer.groups}")
        super().__init__()
        self.lambda_ = lam
        self.kind = "linear" if base is nn.Linear else "conv2d"
        self.weight = layer.weight
        self.register_parameter("bias", layer.bias)
        if self.kind == "linear":
            self.in_features, self.out_features = layer.in_features, layer.out_features
        else:
            self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
            self.kernel_size = tuple(layer.kernel_size)
            self.stride = tuple(layer.stride)
            self.padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
            self.dilation = tuple(layer.dilation)
            self.padding_mode = layer.padding_mode
            self._reversed_padding_repeated_twice = list(layer._reversed_padding_repeated_twice)
            if self.padding_mode != "zeros":  # nn.Conv2d pads with F.pad first, then convolves without padding
                conv_padding: tuple[int, int] | str = (0, 0)
                pad = (0, 0, 0, 0)
            elif isinstance(self.padding, str):
                conv_padding = self.padding
                pad = (0, 0, 0, 0) if self.padding == "valid" else _same_padding(self.kernel_size, self.dilation)
            else:
                conv_padding = self.padding
                pad = (self.padding[1], self.padding[1], self.padding[0], self.padding[0])
            self._geo = _ConvGeometry(self.kernel_size, self.stride, self.dilation, conv_padding, pad)
            self._workspace = _Workspace()  # not state: never in state_dict, rebuilt on demand

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return F.linear(x, self.weight, self.bias)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        return F.conv2d(x, self.weight, self.bias, self.stride, self._geo.conv_padding, self.dilation, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad):
            return self._plain(x)
        if self.kind == "linear":
            return _TrActLinearFn.apply(x, self.weight, self.bias, self.lambda_)
        unbatched = x.ndim == 3
        if unbatched:
            x = x.unsqueeze(0)
        if x.ndim != 4:
            raise ValueError(f"x must have 3 or 4 dimensions for a Conv2d; got shape {tuple(x.shape)}")
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        # the CPU reuses a patch-matrix buffer between steps (see _Workspace); CUDA's caching allocator already does
        workspace = self._workspace if x.device.type == "cpu" else None
        out = _TrActConv2dFn.apply(x, self.weight, self.bias, self.lambda_, self._geo, workspace)
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        if self.kind == "linear":
            shape = f"in_features={self.in_features}, out_features={self.out_features}"
        else:
            shape = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                     f"padding={self.padding}, dilation={self.dilation}, padding_mode={self.padding_mode!r}")
        return f"{self.kind}: {shape}, bias={self.bias is not None}, lambda_={self.lambda_}"
