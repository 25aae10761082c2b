"""Multigrid parameterisation of linear operators: ``MgConv`` and ``MgNO`` (He, Liu & Xu, arXiv 2310.19809).

MgNO writes every multi-channel linear map of a neural operator layer, :math:`\\mathcal{O}(u) = \\sigma(Wu + Bu + b)`,
as **one multigrid V-cycle** whose smoothers, residual operators and transfers are small convolutions (MgNet style).
With levels :math:`\\ell = 0..L-1` (0 finest, each coarser level halves the grid) and :math:`(\\nu^\\ell_{pre},
\\nu^\\ell_{post})` sweeps per level, :class:`MgConv` computes :math:`u = W f` as

.. math::

    &u^0 \\leftarrow S^0 * f^0 \\quad\\text{(first sweep from zero)}, \\qquad
     u^\\ell \\leftarrow u^\\ell + S^\\ell * (f^\\ell - A^\\ell * u^\\ell) \\quad (\\nu_{pre}^\\ell \\text{ sweeps}),\\\\
    &f^{\\ell+1} = R^\\ell * f^\\ell \\;\\; (\\texttt{restrict="data"}, \\text{the official default})
     \\quad\\text{or}\\quad f^{\\ell+1} = R^\\ell * (f^\\ell - A^\\ell * u^\\ell) \\;\\; (\\texttt{"residual"}),
     \\qquad u^{\\ell+1} = \\Pi^\\ell * u^\\ell,\\\\
    &\\text{coarsest level: } \\nu_{pre} + \\nu_{post} \\text{ sweeps}; \\qquad
     u^\\ell \\leftarrow u^\\ell + P^\\ell * u^{\\ell+1}, \\text{ then } \\nu_{post}^\\ell \\text{ sweeps, for }
     \\ell = L-2, \\dots, 0; \\qquad Wf = u^0.

:math:`A^\\ell` (``c_u -> c_f``) and :math:`S^\\ell` (``c_f -> c_u``) are per-level 3-tap/3x3 convolutions shared by
the level's sweeps, :math:`R^\\ell, \\Pi^\\ell` stride-2 convolutions and :math:`P^\\ell` a stride-2 transposed
convolution. No bias: :class:`MgConv` is a linear operator. Boundary conditions enter through the padding of every
convolution, *including the prolongation*: ``zeros`` (Dirichlet), ``reflect`` (Neumann-type), ``circular``
(periodic; with it an MgConv is exactly equivariant to shifts by multiples of :math:`2^{L-1}`).

Two grid hierarchies (``layout``):

* ``"cell"`` (MgNO's): :math:`R` 3-tap, stride 2, padding 1 (:math:`n_{\\ell+1} = \\lceil n_\\ell/2\\rceil`); :math:`P`
  4-tap, stride 2, padding 1.
* ``"vertex"`` (textbook geometric multigrid on :math:`n = 2^k - 1` interior nodes): :math:`R` 3-tap without padding
  (:math:`n_{\\ell+1} = \\lfloor (n_\\ell - 1)/2 \\rfloor`); :math:`P` 3-tap. :meth:`MgConv.poisson_vcycle` sets
  the weights so the module *is* the classical V-cycle for :math:`-\\Delta u = f` (full weighting, linear
  interpolation, damped Jacobi).

Unlike the official code, prolongation output sizes are derived from the fine level at run time (odd sizes work,
one module runs at any resolution), the prolongation is padded with the chosen boundary mode (the official periodic
model zero-pads it), no normalisation is tied to a resolution and smoothing counts are validated pairs of ints.

:class:`MgNO` (the Darcy model ``MgNO_DC``): :math:`u \\leftarrow \\sigma(\\mathrm{MgConv}(u) + \\mathrm{Conv}_{1\\times1}(u))`
for ``n_layers`` layers, the first taking the raw input (no lifting), then a bias-free 1x1 projection.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_choice, check_int, check_positive, check_range, check_type

__all__ = ["MgConv", "MgNO", "level_sizes"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
LAYOUTS = ("cell", "vertex")
RESTRICTIONS = ("data", "residual")
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh, "identity": lambda x: x,
}


def _conv(ndim: int) -> type[nn.Module]:
    return nn.Conv1d if ndim == 1 else nn.Conv2d


def _pad_mode(padding_mode: str) -> str:
    return "constant" if padding_mode == "zeros" else padding_mode


def level_sizes(size: int, n_levels: int, layout: str = "cell") -> list[int]:
    """Grid sizes of the hierarchy along one dimension: ``[size, n_1, ..., n_{L-1}]``.

    ``cell``: :math:`n_{\\ell+1} = \\lceil n_\\ell/2 \\rceil`; ``vertex``: :math:`n_{\\ell+1} = \\lfloor(n_\\ell-1)/2\\rfloor`.
    """
    size = check_int("size", size, minimum=1)
    n_levels = check_int("n_levels", n_levels, minimum=1)
    check_choice("layout", layout, LAYOUTS)
    pad = 1 if layout == "cell" else 0
    out = [size]
    for _ in range(n_levels - 1):
        out.append((out[-1] + 2 * pad - 3) // 2 + 1)
    return out


def _is_int_pair(p: object) -> bool:
    return (isinstance(p, Sequence) and not isinstance(p, (str, bytes)) and len(p) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in p))


def _parse_smoothing(smoothing: object, n_levels: int, name: str = "smoothing",
                     need_coarse_sweep: bool = True) -> tuple[tuple[int, int], ...]:
    """Validate ``(nu_pre, nu_post)`` per level: one pair for all levels or a sequence of ``n_levels`` pairs."""

    def pair(p: object, where: str) -> tuple[int, int]:
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 2:
            raise TypeError(f"{where} must be a pair (nu_pre, nu_post) of ints; got {p!r}")
        return (check_int(f"{where}[0]", p[0], minimum=0), check_int(f"{where}[1]", p[1], minimum=0))

    if smoothing is None:
        out = ((1, 0),) * (n_levels - 1) + ((2, 0),)
    elif _is_int_pair(smoothing):
        out = (pair(smoothing, name),) * n_levels
    else:
        if isinstance(smoothing, (str, bytes)) or not isinstance(smoothing, Sequence):
            raise TypeError(f"{name} must be a pair (nu_pre, nu_post) or a sequence of {n_levels} pairs; "
                            f"got {smoothing!r}")
        if len(smoothing) != n_levels:
            raise ValueError(f"{name} must hold one (nu_pre, nu_post) pair per level ({n_levels}); "
                             f"got {len(smoothing)}")
        out = tuple(pair(p, f"{name}[{i}]") for i, p in enumerate(smoothing))
    if need_coarse_sweep and sum(out[-1]) < 1:
        raise ValueError(f"the coarsest level needs at least one smoothing sweep; got {name}[-1] = {out[-1]}")
    return out


class _Prolongation(nn.Module):
    """Stride-2 transposed convolution with boundary-mode padding and a size taken from the fine level.

    The coarse input is padded by one sample per side with the boundary mode, transposed-convolved without padding
    and cropped to the fine size, which reproduces ``ConvTransposeNd(k, stride=2, padding=p)`` inside the domain and
    continues the coarse function across the boundary as the padding mode says (zeros, mirror, periodic).
    """

    def __init__(self, channels: int, ndim: int, kernel_size: int, offset: int, padding_mode: str) -> None:
        super().__init__()
        self.ndim, self.padding_mode, self.start = ndim, padding_mode, 2 + offset
        self.weight = nn.Parameter(torch.empty((channels, channels) + (kernel_size,) * ndim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, u: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        x = F.pad(u, (1, 1) * self.ndim, mode=_pad_mode(self.padding_mode))
        conv_t = F.conv_transpose1d if self.ndim == 1 else F.conv_transpose2d
        y = conv_t(x, self.weight, stride=2)
        index = (Ellipsis,) + tuple(slice(self.start, self.start + s) for s in size)
        return y[index]


def _check_grid_input(name: str, x: object, ndim: int, channels: int, ref: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, {channels}, *spatial); got {type(x).__name__}")
    if x.ndim != ndim + 2 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (batch, {channels}, " + ", ".join(["n"] * ndim) +
                         f"); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got {x.dtype}")
    if x.dtype != ref.dtype or x.device != ref.device:
        raise TypeError(f"{name} has dtype {x.dtype} on {x.device} but the module's weights are {ref.dtype} on "
                        f"{ref.device}; move the module with .to(x)")
    return x


class MgConv(nn.Module):
    """A V-cycle of convolutions: the multigrid parameterisation of a linear operator (arXiv 2310.19809).

    See the module docstring for the equations. Input ``f`` of shape ``(batch, in_channels, *spatial)`` (1-D or
    2-D), output ``u = W f`` of shape ``(batch, out_channels, *spatial)``.

    Args:
        in_channels: channels of ``f`` (:math:`c_f`).
        out_channels: channels of ``u`` (:math:`c_u`).
        n_levels: number of grid levels :math:`L` (1 = a single-grid smoother).
        ndim: spatial dimensions, 1 or 2.
        smoothing: ``(nu_pre, nu_post)`` for every level, or one pair per level (finest first). Default: the
            official Darcy setting ``[(1, 0)] * (L - 1) + [(2, 0)]``.
        restrict: ``"data"`` (restrict :math:`f`, official default) or ``"residual"`` (textbook).
        padding_mode: ``"zeros"`` (Dirichlet), ``"reflect"`` (Neumann-type), ``"replicate"`` or ``"circular"``
            (periodic), used by every convolution including the prolongation.
        layout: ``"cell"`` (MgNO) or ``"vertex"`` (textbook :math:`2^k-1` grids), see the module docstring.
        kernel_size: odd kernel size of :math:`A` and :math:`S` (3).
    """

    def __init__(self, in_channels: int, out_channels: int, n_levels: int, *, ndim: int = 2,
                 smoothing: object = None, restrict: str = "data", padding_mode: str = "zeros",
                 layout: str = "cell", kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.n_levels = check_int("n_levels", n_levels, minimum=1)
        self.ndim = check_int("ndim", ndim, minimum=1, maximum=2)
        self.restrict = check_choice("restrict", restrict, RESTRICTIONS)
        self.padding_mode = check_choice("padding_mode", padding_mode, PADDING_MODES)
        self.layout = check_choice("layout", layout, LAYOUTS)
        k = check_int("kernel_size", kernel_size, minimum=1)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd; got {k}")
        self.smoothing = _parse_smoothing(smoothing, self.n_levels)
        conv = _conv(self.ndim)
        pad = 1 if self.layout == "cell" else 0
        cf, cu, L = self.in_channels, self.out_channels, self.n_levels
        # A^l / S^l exist only on levels that use them (no dead parameters in the count): S wherever the level
        # smooths; A where a sweep starts from a non-zero u or the residual is restricted.
        sweeps = [pre + post for pre, post in self.smoothing]
        uses_a = [sweeps[lv] > (1 if lv == 0 else 0) or (lv == 0 and self.smoothing[0][1] > 0 and L > 1)
                  or (self.restrict == "residual" and lv < L - 1) for lv in range(L)]
        self.A = nn.ModuleDict({str(lv): conv(cu, cf, k, padding=k // 2, padding_mode=padding_mode, bias=False)
                                for lv in range(L) if uses_a[lv]})
        self.S = nn.ModuleDict({str(lv): conv(cf, cu, k, padding=k // 2, padding_mode=padding_mode, bias=False)
                                for lv in range(L) if sweeps[lv] > 0})
        self.R = nn.ModuleList(conv(cf, cf, 3, stride=2, padding=pad, padding_mode=padding_mode, bias=False)
                               for _ in range(L - 1))
        self.Pi = nn.ModuleList(conv(cu, cu, 3, stride=2, padding=pad, padding_mode=padding_mode, bias=False)
                                for _ in range(L - 1))
        self.P = nn.ModuleList(_Prolongation(cu, self.ndim, 4 if self.layout == "cell" else 3, pad, padding_mode)
                               for _ in range(L - 1))

    def level_shapes(self, spatial: Sequence[int]) -> list[tuple[int, ...]]:
        """Spatial shape of every level for an input of spatial shape ``spatial``; raises if it is too small."""
        per_dim = [level_sizes(int(s), self.n_levels, self.layout) for s in spatial]
        shapes = [tuple(d[i] for d in per_dim) for i in range(self.n_levels)]
        minimum = 2 if self.padding_mode in ("reflect", "replicate") else 1
        if min(min(s) for s in shapes) < minimum:
            raise ValueError(f"input of spatial shape {tuple(spatial)} is too small for n_levels={self.n_levels} "
                             f"({self.layout} layout): level shapes {shapes}; the coarsest level needs >= {minimum} "
                             f"points per dimension with padding_mode={self.padding_mode!r}")
        return shapes

    def _sweeps(self, level: int, u: torch.Tensor | None, f: torch.Tensor, count: int) -> torch.Tensor | None:
        if count == 0:
            return u
        A, S = self.A[str(level)] if str(level) in self.A else None, self.S[str(level)]
        for _ in range(count):
            u = S(f) if u is None else u + S(f - A(u))
        return u

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Apply one V-cycle to ``f``; returns :math:`u^0` (the cycle started from :math:`u = 0`)."""
        _check_grid_input("f", f, self.ndim, self.in_channels, next(self.parameters()))
        shapes = self.level_shapes(f.shape[2:])
        L = self.n_levels
        fs: list[torch.Tensor] = [f]
        us: list[torch.Tensor] = []
        for level in range(L):
            u: torch.Tensor | None = None
            if level > 0:
                prev_f, prev_u = fs[-1], us[-1]
                source = prev_f if self.restrict == "data" else prev_f - self.A[str(level - 1)](prev_u)
                fs.append(self.R[level - 1](source))
                u = self.Pi[level - 1](prev_u)
            nu_pre, nu_post = self.smoothing[level]
            u = self._sweeps(level, u, fs[level], nu_pre + (nu_post if level == L - 1 else 0))
            if u is None:  # no pre-smoothing on the finest level: u^0 = 0
                u = f.new_zeros((f.shape[0], self.out_channels) + tuple(f.shape[2:]))
            us.append(u)
        for level in range(L - 2, -1, -1):
            u = us[level] + self.P[level](us[level + 1], shapes[level])
            swept = self._sweeps(level, u, fs[level], self.smoothing[level][1])
            us[level] = u if swept is None else swept
        return us[0]

    @classmethod
    def poisson_vcycle(cls, n_levels: int, h: float, *, ndim: int = 2, smoothing: object = (2, 0),
                       coarse_sweeps: int = 50, omega: float = 0.8, channels: int = 1, padding_mode: str = "zeros",
                       dtype: torch.dtype = torch.float64) -> "MgConv":
        """An MgConv whose hand-set weights make it the classical V-cycle for :math:`-\\Delta u = f`.

        Vertex layout, residual restriction, zero initial coarse guess (:math:`\\Pi = 0`) and, on level
        :math:`\\ell` with :math:`h_\\ell = 2^\\ell h`: :math:`A` = the 3-point / 5-point Laplacian
        :math:`/h_\\ell^2`, :math:`S = \\omega h_\\ell^2/(2d)` (damped Jacobi), :math:`R` = full weighting
        (:math:`[1/4, 1/2, 1/4]` per dimension), :math:`P = 2^d R^T` (linear interpolation). Every channel is an
        independent copy (diagonal weights).

        Args:
            n_levels: number of levels.
            h: fine-grid spacing (:math:`1/(n+1)` on :math:`n = 2^k-1` interior nodes of :math:`(0, 1)`).
            ndim: 1 or 2.
            smoothing: ``(nu_pre, nu_post)`` on the levels above the coarsest: one pair, or one per such level.
            coarse_sweeps: Jacobi sweeps on the coarsest level.
            omega: Jacobi damping.
            channels: number of independent channels.
            padding_mode: boundary condition of :math:`A` (``zeros`` = Dirichlet).
            dtype: dtype of the weights.
        """
        n_levels = check_int("n_levels", n_levels, minimum=1)
        h = check_positive("h", h)
        coarse_sweeps = check_int("coarse_sweeps", coarse_sweeps, minimum=1)
        omega = check_range("omega", omega, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        check_type("dtype", dtype, torch.dtype)
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype; got {dtype}")
        upper = _parse_smoothing(smoothing, n_levels - 1, need_coarse_sweep=False) if n_levels > 1 else ()
        mg = cls(channels, channels, n_levels, ndim=ndim, smoothing=tuple(upper) + ((coarse_sweeps, 0),),
                 restrict="residual", padding_mode=padding_mode, layout="vertex")
        mg.to(dtype)
        d = mg.ndim
        lap1 = torch.tensor([-1.0, 2.0, -1.0], dtype=dtype)
        fw1 = torch.tensor([0.25, 0.5, 0.25], dtype=dtype)
        if d == 1:
            lap, fw = lap1, fw1
        else:
            lap = torch.zeros(3, 3, dtype=dtype)
            lap[1, :] += lap1
            lap[:, 1] += lap1
            fw = torch.outer(fw1, fw1)
        eye = torch.eye(channels, dtype=dtype).reshape((channels, channels) + (1,) * d)
        centre = torch.zeros((3,) * d, dtype=dtype)
        centre[(1,) * d] = 1.0
        with torch.no_grad():
            for level in range(n_levels):
                hl = h * 2.0**level
                if str(level) in mg.A:
                    mg.A[str(level)].weight.copy_(eye * lap / hl**2)
                if str(level) in mg.S:
                    mg.S[str(level)].weight.copy_(eye * centre * (omega * hl**2 / (2 * d)))
            for level in range(n_levels - 1):
                mg.R[level].weight.copy_(eye * fw)
                mg.Pi[level].weight.zero_()
                mg.P[level].weight.copy_(eye * fw * 2.0**d)
        return mg


class MgNO(nn.Module):
    """The multigrid neural operator (``MgNO_DC``, arXiv 2310.19809).

    .. math::  u_0 = a, \\qquad u_{t+1} = \\sigma\\big(\\mathrm{MgConv}_t(u_t) + W_t u_t + b_t\\big), \\qquad
               G(a) = Q u_T,

    with :math:`W_t, b_t` a 1x1 convolution with bias (the pointwise term and bias function), :math:`Q` a bias-free
    1x1 projection and no lifting layer (the first MgConv takes the raw ``in_channels``).

    Args:
        in_channels, out_channels: channels of the input and output functions.
        hidden_channels: channels :math:`c_u` of every layer.
        n_layers: number of operator layers :math:`T`.
        n_levels: multigrid levels of every MgConv.
        ndim: 1 or 2.
        smoothing, restrict, padding_mode, layout: passed to every :class:`MgConv`.
        activation: ``"gelu"`` (official), ``"relu"``, ``"tanh"`` or ``"identity"``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, n_layers: int, n_levels: int, *,
                 ndim: int = 2, smoothing: object = None, restrict: str = "data", padding_mode: str = "zeros",
                 layout: str = "cell", activation: str = "gelu") -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        hidden = check_int("hidden_channels", hidden_channels, minimum=1)
        self.n_layers = check_int("n_layers", n_layers, minimum=1)
        self.ndim = check_int("ndim", ndim, minimum=1, maximum=2)
        self.activation = check_choice("activation", activation, tuple(_ACTIVATIONS))
        conv = _conv(self.ndim)
        chans = [self.in_channels] + [hidden] * self.n_layers
        self.mgconv = nn.ModuleList(
            MgConv(chans[i], hidden, n_levels, ndim=self.ndim, smoothing=smoothing, restrict=restrict,
                   padding_mode=padding_mode, layout=layout) for i in range(self.n_layers))
        self.pointwise = nn.ModuleList(conv(chans[i], hidden, 1, bias=True) for i in range(self.n_layers))
        self.projection = conv(hidden, self.out_channels, 1, bias=False)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """Map ``a`` of shape ``(batch, in_channels, *spatial)`` to ``(batch, out_channels, *spatial)``."""
        _check_grid_input("a", a, self.ndim, self.in_channels, self.projection.weight)
        act = _ACTIVATIONS[self.activation]
        u = a
        for mg, pw in zip(self.mgconv, self.pointwise):
            u = act(mg(u) + pw(u))
        return self.projection(u)
