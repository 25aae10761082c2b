"""The learned half of DCDM: the network, its unsupervised loss, its training data and the grid Poisson problems.

Kaneda et al., "A Deep Conjugate Direction Method for Iteratively Solving Linear Systems" (ICML 2023,
arXiv 2205.10763). A convolutional network :math:`f_\\theta` is trained so that :math:`f_\\theta(b)` points along
:math:`A^{-1} b` *up to an unknown scale*; the solver (:func:`gradlab.operators.krylov.dcdm`) uses it as a search
direction generator.

**Loss** (scale-free, no solutions needed): with :math:`q = f_\\theta(b)` and the :math:`A`-optimal step
:math:`\\alpha^\\star = q^\\top b / q^\\top A q`,

.. math::
    L(\\theta) = \\frac{1}{B} \\sum_{\\text{batch}} \\big\\lVert b - \\alpha^\\star(b)\\, A q \\big\\rVert_2^2,

which is unchanged by :math:`q \\to c\\,q` for any :math:`c \\neq 0`. The ``matvec`` inside the loss must be the
solver's :math:`A` (same boundary handling): :class:`GridLaplacian` gives both, as a convolution for the loss and as a
sparse matrix for the solver.

**Training right-hand sides** (the paper's Ritz-vector data set): run Lanczos on :math:`A` from :math:`A\\,\\xi`
(:math:`\\xi \\sim N(0, I)`), take the Ritz vectors :math:`v_j` (ascending Ritz values), drop (near-)null ones, and
draw :math:`b = \\sum_j c_j v_j / \\lVert\\cdot\\rVert` with :math:`c_j \\sim N(0, 1)`, multiplied by 9 for the lower
half of the spectrum, where CG is slowest (:func:`ritz_rhs`). For the Dirichlet Laplacian on a box the eigenvectors
are products of sines, so the full-spectrum case is exact and cheap with the type-I discrete sine transform
(:func:`dirichlet_ritz_rhs`).

**Network** (:class:`DCDMNet`): the paper's residual CNN — a linear first convolution, residual pairs
:math:`h \\leftarrow h + \\mathrm{ReLU}(\\mathrm{conv}(\\mathrm{ReLU}(\\mathrm{conv}(h))))`, average-pool / nearest
up-sampling levels joined by skip additions, a linear 1x1 output convolution — in 2-D or 3-D, 16 channels, zero
padding (which matches the Dirichlet boundary). Grid modules take ``(batch, channels, *spatial)`` and follow the
input's dtype and device.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import scipy.fft
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core import check_int, check_positive, check_tensor
from gradlab.curvature.hvp import FunctionOperator
from gradlab.curvature.lanczos import lanczos

__all__ = [
    "DCDMNet",
    "GridLaplacian",
    "dcdm_loss",
    "dirichlet_ritz_rhs",
    "disk_obstacle",
    "net_direction",
    "poisson_matrix",
    "ritz_rhs",
    "train_dcdm",
]


def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        raise TypeError("shape must be a tuple of 2 or 3 grid sizes, e.g. (32, 32); got an int")
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be a tuple of 2 or 3 grid sizes; got {type(shape).__name__}")
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must have 2 or 3 entries (2-D or 3-D grid); got {tuple(shape)}")
    return tuple(check_int(f"shape[{i}]", s, minimum=1) for i, s in enumerate(shape))


# ---------------------------------------------------------------------------------------------------------------
# Poisson problems on grids
# ---------------------------------------------------------------------------------------------------------------


def poisson_matrix(shape: Sequence[int]) -> sp.csr_array:
    """The 5-point (2-D) / 7-point (3-D) Dirichlet Laplacian on a box of interior nodes, as a sparse matrix.

    :math:`A = \\sum_d I \\otimes \\dots \\otimes T_{n_d} \\otimes \\dots \\otimes I` with
    :math:`T_n = \\mathrm{tridiag}(-1, 2, -1)` (no :math:`1/h^2`), unknowns in row-major (C) order of the grid.
    """
    dims = _check_shape(shape)
    mats = [sp.eye_array(n, format="csr") for n in dims]
    A = None
    for d, n in enumerate(dims):
        T = sp.diags_array([-np.ones(n - 1), 2.0 * np.ones(n), -np.ones(n - 1)], offsets=[-1, 0, 1], format="csr")
        factors = mats[:d] + [T] + mats[d + 1:]
        term = factors[0]
        for f in factors[1:]:
            term = sp.kron(term, f, format="csr")
        A = term if A is None else A + term
    out = sp.csr_array(A, dtype=np.float64)
    out.sort_indices()
    return out


def disk_obstacle(shape: Sequence[int], center: Sequence[float], radius: float) -> np.ndarray:
    """Boolean solid mask of a disk (2-D) / ball (3-D): cells whose centre ``((i+1)/(n+1), ...)`` lies within
    ``radius`` of ``center`` (both in units of the unit box)."""
    dims = _check_shape(shape)
    if len(center) != len(dims):
        raise ValueError(f"center must have {len(dims)} coordinates; got {tuple(center)}")
    check_positive("radius", radius)
    axes = [np.arange(1, n + 1) / (n + 1) for n in dims]
    grids = np.meshgrid(*axes, indexing="ij")
    dist2 = sum((g - float(c)) ** 2 for g, c in zip(grids, center))
    return np.asarray(dist2 <= float(radius) ** 2)


class GridLaplacian:
    """The finite-difference Laplacian on the fluid cells of a 2-D/3-D grid, as a matrix and as a convolution.

    The outer boundary is Dirichlet (:math:`u = 0` outside the box); ``solid`` cells (an obstacle) are removed from
    the unknowns and act as zero-flux (Neumann) walls, as solid cells do in the paper's pressure Poisson systems:

    .. math::
        (A u)_i = \\sum_{j \\sim i,\\ j \\text{ not solid}} (u_i - u_j), \\qquad u_j = 0 \\text{ outside the box}.

    Without ``solid`` this is :func:`poisson_matrix`. ``matrix`` (float64 CSR over the fluid cells in row-major order)
    is what the solver gets; :meth:`apply` (a convolution on full grids, zero on solid cells) is what the loss gets.

    Args:
        shape: grid size ``(n1, n2)`` or ``(n1, n2, n3)``.
        solid: optional boolean mask of that shape (``True`` = obstacle cell).
    """

    def __init__(self, shape: Sequence[int], solid: Any = None) -> None:
        self.shape = _check_shape(shape)
        self.dim = len(self.shape)
        if solid is None:
            solid_arr = np.zeros(self.shape, dtype=bool)
        else:
            solid_arr = np.asarray(solid)
            if solid_arr.dtype != bool:
                raise TypeError(f"solid must be a boolean mask; got dtype {solid_arr.dtype}")
            if solid_arr.shape != self.shape:
                raise ValueError(f"solid must have shape {self.shape}; got {solid_arr.shape}")
            if solid_arr.all():
                raise ValueError("solid must leave at least one fluid cell")
        self.solid = solid_arr.copy()
        fluid = ~self.solid
        self.fluid_index = np.flatnonzero(fluid.ravel())
        self.n = int(self.fluid_index.size)
        # diagonal: neighbours that are fluid or outside the box (Dirichlet)
        padded = np.pad(fluid, 1, constant_values=True).astype(np.float64)
        diag = np.zeros(self.shape)
        for d in range(self.dim):
            for s in (0, 2):
                sl = [slice(1, -1)] * self.dim
                sl[d] = slice(s, s + self.shape[d])
                diag += padded[tuple(sl)]
        self._diag = diag * fluid
        self.matrix = self._build_matrix(fluid)
        self._check_nonsingular()
        self._fluid_t = torch.as_tensor(fluid)
        self._diag_t = torch.as_tensor(self._diag)
        self._index_t = torch.as_tensor(self.fluid_index)

    def _build_matrix(self, fluid: np.ndarray) -> sp.csr_array:
        N = int(np.prod(self.shape))
        number = -np.ones(N, dtype=np.int64)
        number[self.fluid_index] = np.arange(self.n)
        number = number.reshape(self.shape)
        rows = [np.arange(self.n)]
        cols = [np.arange(self.n)]
        vals = [self._diag.ravel()[self.fluid_index]]
        for d in range(self.dim):
            lo = [slice(None)] * self.dim
            hi = [slice(None)] * self.dim
            lo[d], hi[d] = slice(0, -1), slice(1, None)
            a, c = number[tuple(lo)].ravel(), number[tuple(hi)].ravel()
            both = (a >= 0) & (c >= 0)
            a, c = a[both], c[both]
            rows += [a, c]
            cols += [c, a]
            vals += [-np.ones(a.size), -np.ones(a.size)]
        M = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(self.n, self.n))
        M.sum_duplicates()
        M.sort_indices()
        return M

    def _check_nonsingular(self) -> None:
        # A connected fluid region walled in by solid cells (no Dirichlet neighbour) has the constant as null vector.
        from scipy.sparse.csgraph import connected_components

        count, labels = connected_components(self.matrix, directed=False)
        dirichlet = np.asarray(self.matrix.sum(axis=1)).ravel() > 0  # rows with a neighbour outside the box
        touches = np.bincount(labels, weights=dirichlet.astype(float), minlength=count) > 0
        if not touches.all():
            cell = np.unravel_index(self.fluid_index[np.flatnonzero(~touches[labels])[0]], self.shape)
            raise ValueError(f"solid encloses a fluid region (e.g. cell {tuple(int(c) for c in cell)}) that does not "
                             "reach the box boundary: its Neumann-only Laplacian is singular")

    def _check_grid(self, name: str, u: torch.Tensor) -> torch.Tensor:
        check_tensor(name, u, ndim=self.dim + 2, floating=True)
        if tuple(u.shape[1:]) != (1, *self.shape):
            raise ValueError(f"{name} must have shape (batch, 1, {', '.join(map(str, self.shape))}); got {tuple(u.shape)}")
        return u

    def apply(self, u: torch.Tensor) -> torch.Tensor:
        """:math:`A u` on full grids ``(batch, 1, *shape)`` (values on solid cells are ignored; output 0 there)."""
        u = self._check_grid("u", u)
        fluid = self._fluid_t.to(device=u.device, dtype=u.dtype)
        v = u * fluid
        kernel = torch.zeros((1, 1) + (3,) * self.dim, dtype=u.dtype, device=u.device)
        for d in range(self.dim):
            for s in (0, 2):
                idx = [0, 0] + [1] * self.dim
                idx[2 + d] = s
                kernel[tuple(idx)] = 1.0
        conv = F.conv2d if self.dim == 2 else F.conv3d
        neighbours = conv(v, kernel, padding=1)
        return (self._diag_t.to(device=u.device, dtype=u.dtype) * v - neighbours * fluid)

    def to_grid(self, v: Any) -> torch.Tensor:
        """Scatter unknowns ``(n,)`` or ``(batch, n)`` (tensor or array) into grids ``(batch, 1, *shape)``, 0 on solid."""
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        if not t.is_floating_point():
            t = t.double()
        t2 = t[None] if t.ndim == 1 else t
        if t2.ndim != 2 or t2.shape[1] != self.n:
            raise ValueError(f"v must have shape ({self.n},) or (batch, {self.n}); got {tuple(t.shape)}")
        out = torch.zeros(t2.shape[0], int(np.prod(self.shape)), dtype=t2.dtype, device=t2.device)
        out[:, self._index_t.to(t2.device)] = t2
        return out.reshape(t2.shape[0], 1, *self.shape)

    def from_grid(self, u: torch.Tensor) -> torch.Tensor:
        """Gather the fluid cells of grids ``(batch, 1, *shape)`` into ``(batch, n)``."""
        u = self._check_grid("u", u)
        return u.reshape(u.shape[0], -1)[:, self._index_t.to(u.device)]


# ---------------------------------------------------------------------------------------------------------------
# Network and loss
# ---------------------------------------------------------------------------------------------------------------


class _ResidualPair(nn.Module):
    """:math:`h + \\mathrm{ReLU}(\\mathrm{conv}(\\mathrm{ReLU}(\\mathrm{conv}(h))))`."""

    def __init__(self, conv: type[nn.Module], channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = conv(channels, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = conv(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + F.relu(self.conv2(F.relu(self.conv1(h))))


class DCDMNet(nn.Module):
    """Residual U-Net producing DCDM search directions (arXiv 2205.10763, Sec. 4), 2-D or 3-D.

    ``x (batch, 1, *spatial) -> q (batch, 1, *spatial)``: linear first convolution to ``channels``; at each of
    ``levels`` resolutions ``blocks_down`` residual pairs, then (except at the coarsest) a 2x average pool, the
    coarser levels, nearest up-sampling back to this size plus the skip, and ``blocks_up`` residual pairs; the
    coarsest level has ``blocks_coarse`` pairs; a linear 1x1 convolution to one channel. Convolutions are
    ``kernel_size`` wide with zero padding; any grid size works (pooling rounds up, up-sampling restores the size).
    """

    def __init__(
        self,
        dim: int = 2,
        channels: int = 16,
        levels: int = 4,
        blocks_down: int = 1,
        blocks_coarse: int = 2,
        blocks_up: int = 1,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3; got {dim!r}")
        self.dim = dim
        check_int("channels", channels, minimum=1)
        self.levels = check_int("levels", levels, minimum=1)
        check_int("blocks_down", blocks_down, minimum=0)
        check_int("blocks_coarse", blocks_coarse, minimum=0)
        check_int("blocks_up", blocks_up, minimum=0)
        k = check_int("kernel_size", kernel_size, minimum=1)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size padding); got {k}")
        conv = nn.Conv2d if dim == 2 else nn.Conv3d
        self.inp = conv(1, channels, k, padding=k // 2)
        self.down = nn.ModuleList(
            nn.Sequential(*[_ResidualPair(conv, channels, k) for _ in range(blocks_down)]) for _ in range(levels - 1)
        )
        self.coarse = nn.Sequential(*[_ResidualPair(conv, channels, k) for _ in range(blocks_coarse)])
        self.up = nn.ModuleList(
            nn.Sequential(*[_ResidualPair(conv, channels, k) for _ in range(blocks_up)]) for _ in range(levels - 1)
        )
        self.out = conv(channels, 1, 1)

    def _level(self, h: torch.Tensor, level: int) -> torch.Tensor:
        if level == self.levels - 1:
            return self.coarse(h)
        h = self.down[level](h)
        pool = F.avg_pool2d if self.dim == 2 else F.avg_pool3d
        k = tuple(2 if s > 1 else 1 for s in h.shape[2:])  # a size-1 axis is not pooled
        c = self._level(pool(h, k, stride=k, ceil_mode=True), level + 1)
        h = h + F.interpolate(c, size=h.shape[2:], mode="nearest")
        return self.up[level](h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, ndim=self.dim + 2, floating=True)
        if x.shape[1] != 1:
            raise ValueError(f"x must have 1 channel, shape (batch, 1, *spatial); got {tuple(x.shape)}")
        return self.out(self._level(self.inp(x), 0))


def dcdm_loss(q: torch.Tensor, b: torch.Tensor, matvec: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean over the batch of :math:`\\lVert b - (q^\\top b / q^\\top A q)\\, A q \\rVert_2^2` (arXiv 2205.10763).

    ``q`` and ``b`` are ``(batch, ...)`` with the same shape; ``matvec`` applies the solver's :math:`A` to a tensor
    of that shape (e.g. :meth:`GridLaplacian.apply`). Invariant to :math:`q \\to c\\,q`, :math:`c \\neq 0`;
    ``q`` must be non-zero in every sample.
    """
    check_tensor("q", q, floating=True)
    check_tensor("b", b, floating=True)
    if q.shape != b.shape or q.ndim < 2:
        raise ValueError(f"q and b must have the same shape (batch, ...); got {tuple(q.shape)} and {tuple(b.shape)}")
    if not callable(matvec):
        raise TypeError(f"matvec must be callable; got {type(matvec).__name__}")
    Aq = matvec(q)
    if not isinstance(Aq, torch.Tensor) or Aq.shape != q.shape:
        raise ValueError(f"matvec must return a tensor shaped like q {tuple(q.shape)}; got "
                         f"{tuple(Aq.shape) if isinstance(Aq, torch.Tensor) else type(Aq).__name__}")
    qf, bf, Aqf = q.flatten(1), b.flatten(1), Aq.flatten(1)
    alpha = (qf * bf).sum(1, keepdim=True) / (qf * Aqf).sum(1, keepdim=True)
    return ((bf - alpha * Aqf) ** 2).sum(1).mean()


# ---------------------------------------------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------------------------------------------


def _weighted_combinations(vectors: torch.Tensor, n: int, low: int, low_factor: float,
                           generator: torch.Generator | None) -> torch.Tensor:
    """``n`` normalised rows ``c @ vectors`` (``vectors`` ``(K, P)`` by ascending eigenvalue), ``c ~ N(0, 1)`` with
    the first ``low`` coefficients multiplied by ``low_factor``."""
    K = vectors.shape[0]
    c = torch.randn(n, K, generator=generator, dtype=torch.float64)
    c[:, :low] *= low_factor
    b = c @ vectors
    return b / b.norm(dim=1, keepdim=True)


def ritz_rhs(
    A: Any,
    n: int,
    m: int,
    *,
    generator: torch.Generator | None = None,
    low_factor: float = 9.0,
    null_tol: float = 1e-8,
) -> torch.Tensor:
    """``n`` training right-hand sides from ``m`` Ritz vectors of ``A`` (the paper's data set), ``(n, P)`` float64.

    Lanczos (:func:`gradlab.curvature.lanczos`, full reorthogonalisation) runs ``m`` steps from :math:`A\\xi`; Ritz
    values with :math:`|\\theta| < \\text{null\\_tol} \\cdot \\max|\\theta|` are dropped; each sample is
    :math:`\\sum_j c_j v_j` normalised, :math:`c_j \\sim N(0,1)`, times ``low_factor`` for the lower half of the kept
    Ritz values. ``A``: sparse matrix, dense array/tensor or ``LinearOperator`` (symmetric).
    """
    from gradlab.operators.krylov import _as_operator

    if isinstance(A, torch.Tensor):
        A = A.detach().cpu().double().numpy()
    op = _as_operator(A)
    P = op.shape[0]
    check_int("n", n, minimum=1)
    m = min(check_int("m", m, minimum=1), P)
    low_factor = check_positive("low_factor", low_factor)
    null_tol = check_positive("null_tol", null_tol, allow_zero=True)

    def matmat(V: torch.Tensor) -> torch.Tensor:
        out = np.asarray(op.matmat(V.detach().cpu().numpy()), dtype=np.float64).reshape(V.shape)
        return torch.from_numpy(out)

    xi = torch.randn(P, generator=generator, dtype=torch.float64)
    v0 = matmat(xi[:, None])[:, 0]
    if not torch.isfinite(v0).all():
        raise ValueError("A @ xi contains NaN or inf")
    if float(v0.norm()) == 0.0:
        raise ValueError("A @ xi is zero: A must not be the zero operator")
    res = lanczos(FunctionOperator(matmat, P, dtype=torch.float64), m, v0=v0, return_vectors=True,
                  generator=generator)
    theta = res.ritz_values[0]
    vectors = res.ritz_vectors[:, :, 0].T  # (m, P), ascending Ritz values
    keep = theta.abs() >= null_tol * theta.abs().max()
    vectors = vectors[keep]
    K = vectors.shape[0]
    if K == 0:
        raise ValueError("every Ritz value is below null_tol * max|theta|; A looks like the zero operator")
    return _weighted_combinations(vectors, n, K // 2, low_factor, generator)


def dirichlet_ritz_rhs(
    shape: Sequence[int], n: int, *, generator: torch.Generator | None = None, low_factor: float = 9.0
) -> torch.Tensor:
    """Exact full-spectrum case of :func:`ritz_rhs` for :func:`poisson_matrix`: ``(n, *shape)`` float64 grids.

    The eigenvectors of the Dirichlet Laplacian are :math:`\\prod_d \\sin(\\pi i_d k_d/(n_d+1))` with eigenvalues
    :math:`\\sum_d 2 - 2\\cos(\\pi k_d/(n_d+1))`; coefficients :math:`c_k \\sim N(0,1)` (times ``low_factor`` on the
    lower half of the eigenvalues) are mapped to the grid with the orthonormal inverse DST-I, then normalised.
    """
    dims = _check_shape(shape)
    check_int("n", n, minimum=1)
    low_factor = check_positive("low_factor", low_factor)
    P = int(np.prod(dims))
    lam = sum(np.meshgrid(*[2.0 - 2.0 * np.cos(np.pi * np.arange(1, s + 1) / (s + 1)) for s in dims],
                          indexing="ij"))
    order = np.argsort(lam.ravel(), kind="stable")
    weight = np.ones(P)
    weight[order[: P // 2]] = low_factor
    c = torch.randn(n, P, generator=generator, dtype=torch.float64).numpy() * weight
    grids = scipy.fft.idstn(c.reshape(n, *dims), type=1, norm="ortho", axes=tuple(range(1, len(dims) + 1)))
    b = torch.from_numpy(np.ascontiguousarray(grids))
    return b / b.flatten(1).norm(dim=1).reshape(n, *([1] * len(dims)))


# ---------------------------------------------------------------------------------------------------------------
# Training and use in the solver
# ---------------------------------------------------------------------------------------------------------------


def train_dcdm(
    net: nn.Module,
    laplacian: GridLaplacian,
    rhs: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
    progress: Callable[[float, str], Any] | None = None,
) -> list[float]:
    """Train ``net`` with Adam on :func:`dcdm_loss` (``matvec = laplacian.apply``); returns the loss of every step.

    ``rhs`` is the data set: ``(N, *laplacian.shape)`` grids or ``(N, laplacian.n)`` unknowns (e.g. from
    :func:`dirichlet_ritz_rhs` or :func:`ritz_rhs`); each step draws ``batch_size`` of them with ``generator``.
    The network runs in its parameters' dtype (float32 in the paper).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module; got {type(net).__name__}")
    if not isinstance(laplacian, GridLaplacian):
        raise TypeError(f"laplacian must be a GridLaplacian; got {type(laplacian).__name__}")
    check_tensor("rhs", rhs, floating=True, finite=True)
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    lr = check_positive("lr", lr)
    if tuple(rhs.shape[1:]) == laplacian.shape:
        grids = rhs.reshape(rhs.shape[0], 1, *laplacian.shape)
    elif rhs.ndim == 2 and rhs.shape[1] == laplacian.n:
        grids = laplacian.to_grid(rhs)
    else:
        raise ValueError(f"rhs must have shape (N, {', '.join(map(str, laplacian.shape))}) or (N, {laplacian.n}); "
                         f"got {tuple(rhs.shape)}")
    if rhs.shape[0] == 0:
        raise ValueError("rhs must hold at least one right-hand side")
    p0 = next(net.parameters())
    grids = grids.to(dtype=p0.dtype, device=p0.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=True)
    losses: list[float] = []
    net.train()
    for step in range(steps):
        idx = torch.randint(0, grids.shape[0], (batch_size,), generator=generator).to(grids.device)
        b = grids[idx]
        loss = dcdm_loss(net(b), b, laplacian.apply)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the DCDM loss became {value} at training step {step}")
        losses.append(value)
        if progress is not None and (step % 50 == 0 or step == steps - 1):
            progress((step + 1) / steps, f"DCDM training step {step + 1}/{steps}, loss {value:.4g}")
    net.eval()
    return losses


def net_direction(net: nn.Module, laplacian: GridLaplacian) -> Callable[[np.ndarray], np.ndarray]:
    """The ``direction`` callable for :func:`~gradlab.operators.krylov.dcdm`: ``r (n,) float64 -> q (n,) float64``.

    The residual is scattered onto the grid (0 on solid cells), cast to the network's dtype/device (float32 in
    the paper), passed through ``net`` without gradients, and the fluid cells of the output are returned in float64.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module; got {type(net).__name__}")
    if not isinstance(laplacian, GridLaplacian):
        raise TypeError(f"laplacian must be a GridLaplacian; got {type(laplacian).__name__}")
    next(net.parameters())  # raises StopIteration early for a parameter-free module

    def direction(r: np.ndarray) -> np.ndarray:
        p0 = next(net.parameters())
        u = laplacian.to_grid(torch.as_tensor(np.asarray(r, dtype=np.float64))).to(dtype=p0.dtype, device=p0.device)
        with torch.no_grad():
            q = net(u)
        return laplacian.from_grid(q)[0].double().cpu().numpy()

    return direction
