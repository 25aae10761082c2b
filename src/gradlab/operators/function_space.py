"""Neural-network layers extended to function spaces (Berner et al., arXiv 2506.10973), and our own FNO.

The recipe of "Principled Approaches for Extending Neural Architectures to Function Spaces for Operator Learning"
turns a network on grids into a *neural operator*: a map between functions whose outputs converge as the grid is
refined (discretisation convergence). The layers here implement its principles on a uniform grid of
:math:`[0, 1]^d` with ``n`` points per dimension:

* **quadrature**: sums over space become integrals, :math:`\\int v \\approx \\sum_j w_j v(x_j)`
  (:func:`quadrature_weights`; :class:`IntegralLinear`, :func:`lp_loss`, :func:`h1_loss`);
* **global integral kernels** with a fixed number of Fourier modes (:class:`SpectralConv`, :class:`FNO`,
  Li et al. arXiv 2010.08895): :math:`(Kv)(x) = \\mathcal{F}^{-1}(R_k\\,\\hat v_k)(x)`, :math:`|k| < k_{max}`;
* **differential kernels**: a convolution whose kernel is made zero-sum and divided by the grid spacing converges
  to a directional derivative (:class:`FiniteDifferenceConv`);
* **kernel interpolation** of a trained CNN: a :math:`k`-tap kernel at scale :math:`s = n/n_{base}` is resampled to
  :math:`s k - s + 1` taps and divided by the area ratio :math:`s^d` (:class:`InterpolatedConv`,
  :func:`to_operator`);
* **input-output interpolation**: resample to the training resolution, apply, resample back
  (:class:`InputOutputInterpolation`).

Grid layouts (``layout``): ``"periodic"`` (default; :math:`x_j = j/n`, the grid of
:mod:`gradlab.operators.pde`; the grid at :math:`2n` restricted to even indices is the grid at :math:`n`),
``"vertex"`` (:math:`x_j = j/(n-1)`, trapezoid weights) and ``"cell"`` (:math:`x_j = (j + 1/2)/n`, midpoint).
All modules take ``(batch, channels, *spatial)`` tensors (1-D or 2-D); parameter-free operations follow the
input's dtype and device.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_choice, check_int, check_positive, check_type

__all__ = [
    "FNO", "FiniteDifferenceConv", "InputOutputInterpolation", "IntegralLinear", "InterpolatedConv",
    "SpectralConv", "function_norm", "grid_points", "h1_loss", "lp_loss", "quadrature_weights", "resample",
    "to_operator",
]

LAYOUTS = ("periodic", "vertex", "cell")
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu,
                                                                    "tanh": torch.tanh}


# ----------------------------------------------------------------------------------------------- grids, resampling
def grid_points(n: int, layout: str = "periodic", *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The ``n`` points of a uniform grid of :math:`[0, 1]` in ``layout``."""
    n = check_int("n", n, minimum=1)
    check_choice("layout", layout, LAYOUTS)
    j = torch.arange(n, dtype=dtype, device=device)
    if layout == "periodic":
        return j / n
    if layout == "cell":
        return (j + 0.5) / n
    if n < 2:
        raise ValueError("a vertex grid needs n >= 2 points")
    return j / (n - 1)


def quadrature_weights(n: int, layout: str = "periodic", *, dtype: torch.dtype = torch.float64,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Quadrature weights :math:`w_j` with :math:`\\int_0^1 v \\approx \\sum_j w_j v(x_j)`.

    ``periodic``: :math:`1/n` (rectangle rule, exact for trigonometric polynomials of degree :math:`< n` and the
    trapezoid rule when :math:`v(0) = v(1)`); ``cell``: :math:`1/n` (midpoint); ``vertex``: trapezoid,
    :math:`h = 1/(n-1)` with half weights at both ends.
    """
    n = check_int("n", n, minimum=1)
    check_choice("layout", layout, LAYOUTS)
    if layout != "vertex":
        return torch.full((n,), 1.0 / n, dtype=dtype, device=device)
    if n < 2:
        raise ValueError("a vertex grid needs n >= 2 points")
    w = torch.full((n,), 1.0 / (n - 1), dtype=dtype, device=device)
    w[0] = w[-1] = 0.5 / (n - 1)
    return w


def _spatial(name: str, x: object, ndims: Sequence[int] = (1, 2)) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, channels, *spatial); got {type(x).__name__}")
    if x.ndim - 2 not in ndims:
        raise ValueError(f"{name} must have shape (batch, channels, *spatial) with {' or '.join(map(str, ndims))} "
                         f"spatial dimension(s); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got {x.dtype}")
    return x


def _size_tuple(name: str, size: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size,) * ndim
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != ndim:
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints; got {size!r}")
    return tuple(check_int(f"{name}[{i}]", s, minimum=1) for i, s in enumerate(size))


def resample(x: torch.Tensor, size: int | Sequence[int], layout: str = "periodic", mode: str = "linear"
             ) -> torch.Tensor:
    """Resample grid functions ``x`` of shape ``(batch, channels, *spatial)`` to ``size`` points per dimension.

    ``mode="linear"``: (bi)linear interpolation between the grid points of ``layout`` (``periodic`` wraps around,
    so its last interval interpolates towards :math:`v(1) = v(0)`); ``mode="fourier"`` (periodic layout only):
    truncation or zero-padding of the Fourier series, exact for trigonometric polynomials below both Nyquist limits.
    """
    x = _spatial("x", x)
    ndim = x.ndim - 2
    size = _size_tuple("size", size, ndim)
    check_choice("layout", layout, LAYOUTS)
    check_choice("mode", mode, ("linear", "fourier"))
    if tuple(x.shape[2:]) == size:
        return x
    if mode == "fourier":
        if layout != "periodic":
            raise ValueError(f"mode='fourier' needs layout='periodic'; got layout={layout!r}")
        return _fourier_resample(x, size)
    interp = "linear" if ndim == 1 else "bilinear"
    if layout == "periodic":
        xp = F.pad(x, (0, 1) * ndim, mode="circular")
        y = F.interpolate(xp, size=tuple(s + 1 for s in size), mode=interp, align_corners=True)
        return y[(Ellipsis,) + tuple(slice(0, s) for s in size)]
    return F.interpolate(x, size=size, mode=interp, align_corners=(layout == "vertex"))


def _fourier_resample(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    ndim = len(size)
    n_in = tuple(x.shape[2:])
    dims = tuple(range(-ndim, 0))
    xf = torch.fft.rfftn(x, dim=dims, norm="forward")
    kmax = [(min(a, b) - 1) // 2 for a, b in zip(n_in, size)]  # keep |k| <= kmax (strictly below Nyquist)
    out_shape = x.shape[:2] + tuple(size[:-1]) + (size[-1] // 2 + 1,)
    out = xf.new_zeros(out_shape)
    if ndim == 1:
        out[..., : kmax[0] + 1] = xf[..., : kmax[0] + 1]
    else:
        k1, k2 = kmax
        out[..., : k1 + 1, : k2 + 1] = xf[..., : k1 + 1, : k2 + 1]
        if k1 > 0:
            out[..., -k1:, : k2 + 1] = xf[..., -k1:, : k2 + 1]
    return torch.fft.irfftn(out, s=size, dim=dims, norm="forward")


# --------------------------------------------------------------------------------------------------- norms, losses
def function_norm(x: torch.Tensor, p: float = 2.0, layout: str = "periodic") -> torch.Tensor:
    """Per-sample :math:`L^p` norm :math:`(\\sum_c \\int |x_c|^p)^{1/p}` by quadrature; shape ``(batch,)``."""
    x = _spatial("x", x)
    p = check_positive("p", p)
    if p < 1:
        raise ValueError(f"p must be >= 1; got {p}")
    integrand = x.abs() ** p
    for i, n in enumerate(x.shape[2:]):
        shape = [1] * x.ndim
        shape[2 + i] = n
        integrand = integrand * quadrature_weights(n, layout, dtype=x.dtype, device=x.device).reshape(shape)
    return integrand.flatten(1).sum(1) ** (1.0 / p)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    return values.mean() if reduction == "mean" else values.sum() if reduction == "sum" else values


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    _spatial("pred", pred)
    _spatial("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")


def lp_loss(pred: torch.Tensor, target: torch.Tensor, p: float = 2.0, *, relative: bool = True,
            layout: str = "periodic", reduction: str = "mean") -> torch.Tensor:
    """:math:`\\|G - u\\|_{L^p}` (absolute, with quadrature weights, so it converges as the grid is refined) or
    :math:`\\|G - u\\|_{L^p} / \\|u\\|_{L^p}` (``relative``), averaged over the batch."""
    _check_pair(pred, target)
    err = function_norm(pred - target, p, layout)
    if relative:
        err = err / function_norm(target, p, layout).clamp_min(torch.finfo(target.dtype).tiny)
    return _reduce(err, reduction)


def _grid_gradient(x: torch.Tensor, layout: str) -> list[torch.Tensor]:
    out = []
    for i, n in enumerate(x.shape[2:]):
        if n < 2:
            raise ValueError(f"h1_loss needs >= 2 points per dimension; got spatial shape {tuple(x.shape[2:])}")
        h = 1.0 / (n - 1) if layout == "vertex" else 1.0 / n
        out.append(torch.gradient(x, spacing=h, dim=2 + i)[0])
    return out


def h1_loss(pred: torch.Tensor, target: torch.Tensor, *, relative: bool = True, layout: str = "periodic",
            reduction: str = "mean") -> torch.Tensor:
    """:math:`H^1` error :math:`(\\|e\\|^2 + \\|\\nabla e\\|^2)^{1/2}` (relative to the target's :math:`H^1` norm),
    gradients by central differences (one-sided at the ends), integrals by quadrature."""
    _check_pair(pred, target)
    check_choice("layout", layout, LAYOUTS)

    def sq(v: torch.Tensor) -> torch.Tensor:
        total = function_norm(v, 2.0, layout) ** 2
        for g in _grid_gradient(v, layout):
            total = total + function_norm(g, 2.0, layout) ** 2
        return total

    err = sq(pred - target).sqrt()
    if relative:
        err = err / sq(target).sqrt().clamp_min(torch.finfo(target.dtype).tiny)
    return _reduce(err, reduction)


# ----------------------------------------------------------------------------------------------- spectral / FNO
def _real_pair(shape: tuple[int, ...], scale: float) -> nn.Parameter:
    return nn.Parameter(scale * torch.rand(shape + (2,)))


class SpectralConv(nn.Module):
    """Fourier integral operator with a fixed number of modes (FNO layer, arXiv 2010.08895; 2506.10973 §3).

    .. math::  (Kv)(x) = \\sum_{k \\in \\mathcal{K}} \\Big(\\sum_i R_{k, o i}\\, \\hat v_{i,k}\\Big) e^{2\\pi i k\\cdot x},
               \\qquad \\hat v_k = \\frac1{n^d} \\sum_j v(x_j) e^{-2\\pi i k\\cdot x_j},

    :math:`\\mathcal{K}` = :math:`\\{0..m-1\\}` in 1-D, :math:`\\{|k_1| < m_1\\} \\times \\{0..m_2-1\\}` in 2-D (real
    output via the half spectrum). On a grid too coarse for all modes only the frequencies strictly below the
    Nyquist limit are used, so the same weights define the same operator at every resolution.

    Args:
        in_channels, out_channels: channels.
        modes: ``m`` (1-D) or ``(m1, m2)`` (2-D).
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | Sequence[int]) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        if isinstance(modes, int) and not isinstance(modes, bool):
            modes = (modes,)
        if isinstance(modes, (str, bytes)) or not isinstance(modes, Sequence) or len(modes) not in (1, 2):
            raise TypeError(f"modes must be an int (1-D) or a pair of ints (2-D); got {modes!r}")
        self.modes = tuple(check_int(f"modes[{i}]", m, minimum=1) for i, m in enumerate(modes))
        self.ndim = len(self.modes)
        scale = 1.0 / (in_channels * out_channels)
        if self.ndim == 1:
            self.weight = _real_pair((in_channels, out_channels, self.modes[0]), scale)
        else:
            self.weight = _real_pair((in_channels, out_channels, 2 * self.modes[0] - 1, self.modes[1]), scale)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = _spatial("v", v, (self.ndim,))
        if v.shape[1] != self.in_channels:
            raise ValueError(f"v must have {self.in_channels} channels; got shape {tuple(v.shape)}")
        if v.dtype != self.weight.dtype:
            raise TypeError(f"v has dtype {v.dtype} but the weights are {self.weight.dtype}; move the module with .to(v)")
        w = torch.view_as_complex(self.weight)
        n = tuple(v.shape[2:])
        vf = torch.fft.rfftn(v, dim=tuple(range(-self.ndim, 0)))
        out = vf.new_zeros((v.shape[0], self.out_channels) + vf.shape[2:])
        if self.ndim == 1:
            m = min(self.modes[0], (n[0] - 1) // 2 + 1)
            out[..., :m] = torch.einsum("bik,iok->bok", vf[..., :m], w[..., :m])
        else:
            M1 = self.modes[0]
            m1 = min(M1, (n[0] - 1) // 2 + 1)
            m2 = min(self.modes[1], (n[1] - 1) // 2 + 1)
            freqs = torch.cat([torch.arange(m1), torch.arange(-m1 + 1, 0)]).to(v.device)
            rows = freqs % n[0]
            block = torch.einsum("bixy,ioxy->boxy", vf[:, :, rows, :m2], w[:, :, freqs + M1 - 1, :m2])
            out[:, :, rows, :m2] = block
        return torch.fft.irfftn(out, s=n, dim=tuple(range(-self.ndim, 0)))


class FNO(nn.Module):
    """Fourier neural operator (Li et al., arXiv 2010.08895), our implementation with pinned, explicit defaults.

    .. math::  v_0 = P\\,[a; x], \\qquad v_{t+1} = \\sigma(K_t v_t + W_t v_t + b_t) \\;(\\text{no } \\sigma
               \\text{ after the last layer}), \\qquad G(a) = Q_2\\,\\sigma(Q_1 v_T),

    :math:`P, W_t, Q_1, Q_2` pointwise (1x1) maps, :math:`K_t` :class:`SpectralConv`, :math:`x` the grid coordinates
    (``positional_embedding``, periodic layout), no domain padding.

    Args:
        in_channels, out_channels: channels of input and output functions.
        hidden_channels: width of the Fourier layers.
        modes: Fourier modes (int: 1-D; pair: 2-D).
        n_layers: number of Fourier layers.
        projection_channels: width of :math:`Q_1`.
        positional_embedding: append the grid coordinates to the input.
        activation: ``"gelu"``, ``"relu"`` or ``"tanh"``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 32,
                 modes: int | Sequence[int] = 16, n_layers: int = 4, *, projection_channels: int = 128,
                 positional_embedding: bool = True, activation: str = "gelu") -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        hidden = check_int("hidden_channels", hidden_channels, minimum=1)
        self.n_layers = check_int("n_layers", n_layers, minimum=1)
        proj = check_int("projection_channels", projection_channels, minimum=1)
        self.positional_embedding = bool(check_type("positional_embedding", positional_embedding, bool))
        self.activation = check_choice("activation", activation, tuple(_ACTIVATIONS))
        self.spectral = nn.ModuleList(SpectralConv(hidden, hidden, modes) for _ in range(self.n_layers))
        self.ndim = self.spectral[0].ndim
        conv = nn.Conv1d if self.ndim == 1 else nn.Conv2d
        self.lifting = conv(self.in_channels + (self.ndim if self.positional_embedding else 0), hidden, 1)
        self.pointwise = nn.ModuleList(conv(hidden, hidden, 1) for _ in range(self.n_layers))
        self.q1 = conv(hidden, proj, 1)
        self.q2 = conv(proj, self.out_channels, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """Map ``a`` of shape ``(batch, in_channels, *spatial)`` to ``(batch, out_channels, *spatial)``."""
        a = _spatial("a", a, (self.ndim,))
        if a.shape[1] != self.in_channels:
            raise ValueError(f"a must have {self.in_channels} channels; got shape {tuple(a.shape)}")
        act = _ACTIVATIONS[self.activation]
        if self.positional_embedding:
            coords = [grid_points(n, "periodic", dtype=a.dtype, device=a.device) for n in a.shape[2:]]
            mesh = torch.meshgrid(*coords, indexing="ij")
            pos = torch.stack(mesh).unsqueeze(0).expand((a.shape[0], self.ndim) + tuple(a.shape[2:]))
            a = torch.cat([a, pos], dim=1)
        v = self.lifting(a)
        for t, (k, w) in enumerate(zip(self.spectral, self.pointwise)):
            v = k(v) + w(v)
            if t < self.n_layers - 1:
                v = act(v)
        return self.q2(act(self.q1(v)))


# ------------------------------------------------------------------------------------------ differential kernels
class FiniteDifferenceConv(nn.Module):
    """Convolution made a differential operator: zero-sum kernel divided by the grid spacing (arXiv 2506.10973).

    .. math::  (Dv)_o(x) = \\frac1h \\sum_{i, \\delta} w_{o i \\delta} \\big(v_i(x + \\delta h) - v_i(x)\\big)
               \\;\\xrightarrow{h \\to 0}\\; \\sum_i \\Big(\\sum_\\delta w_{o i \\delta}\\, \\delta\\Big)\\cdot\\nabla v_i(x),

    i.e. the convolution with the kernel :math:`w - (\\sum_\\delta w)\\,e_0` over :math:`h`. ``h`` (the grid spacing
    in physical units) must be passed to :meth:`forward`.

    Args:
        in_channels, out_channels: channels.
        kernel_size: odd number of taps per dimension.
        ndim: 1 or 2.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (must match the boundary).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, ndim: int = 1,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=3)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd; got {kernel_size}")
        self.ndim = check_int("ndim", ndim, minimum=1, maximum=2)
        self.padding_mode = check_choice("padding_mode", padding_mode, ("zeros", "reflect", "replicate", "circular"))
        self.weight = nn.Parameter(torch.empty((out_channels, in_channels) + (self.kernel_size,) * self.ndim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, v: torch.Tensor, h: float) -> torch.Tensor:
        v = _spatial("v", v, (self.ndim,))
        if v.shape[1] != self.in_channels:
            raise ValueError(f"v must have {self.in_channels} channels; got shape {tuple(v.shape)}")
        h = check_positive("h", h)
        p = self.kernel_size // 2
        w = self.weight
        centre = (Ellipsis,) + (p,) * self.ndim
        zero_sum = w.clone()
        zero_sum[centre] = w[centre] - w.flatten(2).sum(-1)
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        x = F.pad(v, (p, p) * self.ndim, mode=mode)
        conv = F.conv1d if self.ndim == 1 else F.conv2d
        return conv(x, zero_sum) / h


# ------------------------------------------------------------------------------------------ quadrature integral
def _cosine_basis(n_modes: int, x: torch.Tensor) -> torch.Tensor:
    k = torch.arange(n_modes, dtype=x.dtype, device=x.device)
    phi = math.sqrt(2.0) * torch.cos(math.pi * k[:, None] * x[None, :])
    phi[0] = 1.0
    return phi  # (n_modes, n): orthonormal on [0, 1]


class IntegralLinear(nn.Module):
    """A linear layer over space as an integral operator with quadrature weights (arXiv 2506.10973, principle 2).

    .. math::  (Kv)_o(x) = \\sum_i \\int_{[0,1]^d} \\kappa_{oi}(x, y)\\, v_i(y)\\, dy
               \\approx \\sum_{i, j} \\kappa_{oi}(x, y_j)\\, v_i(y_j)\\, w_j, \\qquad
               \\kappa_{oi}(x, y) = \\sum_{p, q} W_{oipq}\\, \\phi_p(x)\\, \\phi_q(y),

    with :math:`\\phi_p` the tensor-product cosine basis (``n_modes`` per dimension, orthonormal on :math:`[0,1]`)
    and :math:`w_j` :func:`quadrature_weights`. The kernel is a function, so the same weights act at any resolution;
    without the weights :math:`w_j` the output would grow like :math:`n^d`.

    Args:
        in_channels, out_channels: channels.
        n_modes: basis functions per dimension.
        ndim: 1 or 2.
        layout: grid layout of the input (see :func:`grid_points`).
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int = 8, *, ndim: int = 1,
                 layout: str = "periodic") -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.n_modes = check_int("n_modes", n_modes, minimum=1)
        self.ndim = check_int("ndim", ndim, minimum=1, maximum=2)
        self.layout = check_choice("layout", layout, LAYOUTS)
        m = self.n_modes**self.ndim
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, m, m) / math.sqrt(in_channels * m))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = _spatial("v", v, (self.ndim,))
        if v.shape[1] != self.in_channels:
            raise ValueError(f"v must have {self.in_channels} channels; got shape {tuple(v.shape)}")
        phis = []
        for n in v.shape[2:]:
            x = grid_points(n, self.layout, dtype=v.dtype, device=v.device)
            w = quadrature_weights(n, self.layout, dtype=v.dtype, device=v.device)
            phis.append((_cosine_basis(self.n_modes, x), w))
        if self.ndim == 1:
            (phi, w), = phis
            coef = torch.einsum("bij,qj->biq", v * w, phi)
            out = torch.einsum("oipq,biq->bop", self.weight, coef)
            return torch.einsum("bop,px->box", out, phi)
        (p1, w1), (p2, w2) = phis
        vw = v * w1[:, None] * w2[None, :]
        coef = torch.einsum("bixy,qx,ry->biqr", vw, p1, p2).flatten(2)
        out = torch.einsum("oipq,biq->bop", self.weight, coef)
        out = out.reshape(out.shape[:2] + (self.n_modes, self.n_modes))
        return torch.einsum("bopr,px,ry->boxy", out, p1, p2)


# ------------------------------------------------------------------------------------------ kernel interpolation
def _scale_factor(name: str, value: float, what: str) -> int:
    r = round(value)
    if abs(value - r) > 1e-9:
        raise ValueError(f"{name}: {what} = {value:g} is not an integer at this resolution")
    return int(r)


class InterpolatedConv(nn.Module):
    """A trained convolution as a kernel on physical space, resampled to the input's resolution (arXiv 2506.10973).

    At scale :math:`s = n / n_{base}` (per dimension) the :math:`k`-tap kernel is resampled by (bi)linear
    interpolation through its end taps to :math:`s(k-1)+1 = sk - s + 1` taps, divided by the area ratio
    :math:`\\prod_d s_d` (so the kernel's integral is kept), and applied with the padding scaled by :math:`s`
    (the stride, a relative down-sampling factor, is kept). At :math:`s = 1` it is the original convolution.
    :math:`s(k-1)` and :math:`s\\cdot` padding must be integers; dilation must be 1.

    Args:
        conv: a ``nn.Conv1d`` or ``nn.Conv2d`` (its weights are shared, not copied).
        base_size: the spatial size of this convolution's input at the training resolution.
    """

    def __init__(self, conv: nn.Module, base_size: int | Sequence[int]) -> None:
        super().__init__()
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d)):
            raise TypeError(f"conv must be nn.Conv1d or nn.Conv2d; got {type(conv).__name__}")
        self.ndim = 1 if isinstance(conv, nn.Conv1d) else 2
        if any(d != 1 for d in conv.dilation):
            raise ValueError(f"conv must have dilation 1; got {conv.dilation}")
        self.conv = conv
        self.base_size = _size_tuple("base_size", base_size, self.ndim)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = _spatial("v", v, (self.ndim,))
        conv = self.conv
        if v.shape[1] != conv.in_channels:
            raise ValueError(f"v must have {conv.in_channels} channels; got shape {tuple(v.shape)}")
        if v.dtype != conv.weight.dtype:
            raise TypeError(f"v has dtype {v.dtype} but the weights are {conv.weight.dtype}; move the module with .to(v)")
        n = tuple(v.shape[2:])
        if n == self.base_size:
            return conv(v)
        s = [a / b for a, b in zip(n, self.base_size)]
        k = conv.kernel_size
        new_k = tuple(_scale_factor("kernel", si * (ki - 1), "s*(k-1)") + 1 for si, ki in zip(s, k))
        interp = "linear" if self.ndim == 1 else "bilinear"
        w = F.interpolate(conv.weight, size=new_k, mode=interp, align_corners=True) if new_k != tuple(k) \
            else conv.weight
        w = w / math.prod(s)
        if conv.padding == "same":
            pads = tuple((kk - 1) // 2 for kk in new_k)
            if any((kk - 1) % 2 for kk in new_k):
                raise ValueError(f"padding='same' needs odd resampled kernels; got {new_k}")
        elif conv.padding == "valid":
            pads = (0,) * self.ndim
        else:
            pads = tuple(_scale_factor("padding", si * p, "s*padding") for si, p in zip(s, conv.padding))
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        pad_arg: list[int] = []
        for p in reversed(pads):
            pad_arg += [p, p]
        x = F.pad(v, pad_arg, mode=mode) if any(pads) else v
        fn = F.conv1d if self.ndim == 1 else F.conv2d
        return fn(x, w, conv.bias, stride=conv.stride, groups=conv.groups)


class InputOutputInterpolation(nn.Module):
    """Resample to the training resolution, apply ``module``, resample back (arXiv 2506.10973's baseline).

    .. math::  G_n(a) = I_{n_{out}(n)} \\, \\mathcal{N}\\big(I_{n_{base}}\\, a\\big), \\qquad
               n_{out}(n) = n \\cdot n^{out}_{base} / n_{base}

    with :math:`I_m` :func:`resample` to :math:`m` points. Discretisation-agnostic by construction, but never more
    accurate than the network at its training resolution.

    Args:
        module: any grid network.
        base_size: its input's spatial size at the training resolution.
        base_out_size: its output's spatial size there (default: ``base_size``).
        layout, mode: passed to :func:`resample`.
    """

    def __init__(self, module: nn.Module, base_size: int | Sequence[int], base_out_size: int | Sequence[int] | None
                 = None, *, layout: str = "periodic", mode: str = "linear") -> None:
        super().__init__()
        check_type("module", module, nn.Module)
        self.module = module
        self.base_size = base_size
        self.base_out_size = base_size if base_out_size is None else base_out_size
        self.layout = check_choice("layout", layout, LAYOUTS)
        self.mode = check_choice("mode", mode, ("linear", "fourier"))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = _spatial("v", v)
        ndim = v.ndim - 2
        base = _size_tuple("base_size", self.base_size, ndim)
        base_out = _size_tuple("base_out_size", self.base_out_size, ndim)
        n = tuple(v.shape[2:])
        if n == base:
            return self.module(v)
        y = self.module(resample(v, base, self.layout, self.mode))
        out = tuple(max(1, round(ni * bo / b)) for ni, bo, b in zip(n, base_out, base))
        return resample(y, out, self.layout, self.mode)


_CONV = (nn.Conv1d, nn.Conv2d)
_RESAMPLED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool1d, nn.MaxPool2d)
_REFUSED = (nn.Linear, nn.Flatten, nn.Unflatten, nn.Conv3d, nn.ConvTranspose3d)


def to_operator(cnn: nn.Module, base_resolution: int | Sequence[int], *, in_channels: int | None = None,
                layout: str = "periodic") -> nn.Module:
    """Convert a trained CNN into a discretisation-agnostic operator (arXiv 2506.10973), leaving ``cnn`` intact.

    Records every layer's input size in one forward pass at ``base_resolution``, then on a deep copy replaces

    * ``Conv1d/2d`` with kernel > 1 by :class:`InterpolatedConv` (1x1 convs are already pointwise operators),
    * transposed convolutions and pooling by :class:`InputOutputInterpolation` of that layer,

    and keeps pointwise layers (activations, normalisation over channels, 1x1 convs) and adaptive pooling. Layers
    mixing space in a resolution-bound way (``Linear``, ``Flatten``) raise ``TypeError``; replace them by
    :class:`IntegralLinear`.

    Args:
        cnn: a grid network taking ``(batch, channels, *spatial)``.
        base_resolution: the training resolution (int or one int per dimension).
        in_channels: input channels (default: those of the first convolution).
        layout: grid layout used for the resampling of :class:`InputOutputInterpolation`.
    """
    check_type("cnn", cnn, nn.Module)
    check_choice("layout", layout, LAYOUTS)
    model = copy.deepcopy(cnn)
    for name, mod in model.named_modules():
        if isinstance(mod, _REFUSED):
            raise TypeError(f"to_operator cannot convert layer {name!r} ({type(mod).__name__}): it acts on a "
                            "resolution-bound axis; use IntegralLinear instead")
    convs = [m for m in model.modules() if isinstance(m, _CONV + (nn.ConvTranspose1d, nn.ConvTranspose2d))]
    if not convs:
        raise ValueError("cnn contains no convolution to convert")
    ndim = 1 if isinstance(convs[0], (nn.Conv1d, nn.ConvTranspose1d)) else 2
    base = _size_tuple("base_resolution", base_resolution, ndim)
    c_in = convs[0].in_channels if in_channels is None else check_int("in_channels", in_channels, minimum=1)
    sizes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, _CONV + _RESAMPLED):
            def hook(m: nn.Module, inp: tuple, out: torch.Tensor, name: str = name) -> None:
                sizes[name] = (tuple(inp[0].shape[2:]), tuple(out.shape[2:]))
            hooks.append(mod.register_forward_hook(hook))
    ref = next(iter(model.parameters()))
    try:
        with torch.no_grad():
            model(torch.zeros((1, c_in) + base, dtype=ref.dtype, device=ref.device))
    finally:
        for hk in hooks:
            hk.remove()
    for name, (size_in, size_out) in sizes.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        mod = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
        if isinstance(mod, _CONV):
            if all(k == 1 for k in mod.kernel_size) and all(s == 1 for s in mod.stride):
                continue
            new: nn.Module = InterpolatedConv(mod, size_in)
        else:
            new = InputOutputInterpolation(mod, size_in, size_out, layout=layout)
        if attr.isdigit():
            parent[int(attr)] = new
        else:
            setattr(parent, attr, new)
    return model
