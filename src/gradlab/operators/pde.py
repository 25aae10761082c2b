"""Darcy-flow data whose coefficients are *functions* of x, solved on any grid (arXiv 2310.19809, 2506.10973).

The operator-learning benchmarks of MgNO (He, Liu & Xu, arXiv 2310.19809) and of the function-space recipe
(Berner et al., arXiv 2506.10973) map a permeability :math:`a` to the solution :math:`u` of

.. math::  -\\nabla\\cdot\\big(a(x)\\nabla u(x)\\big) = f(x) \\quad\\text{in } (0,1)^d, \\qquad u = 0 \\text{ on the boundary}.

Comparing errors across resolutions needs *the same functions* at every resolution, so a coefficient here is a
random function, not a random array: :class:`DarcyCoefficient` draws a Gaussian random field as a fixed cosine
series (spectrum :math:`\\lambda_k = (\\pi^2|k|^2 + \\tau^2)^{-\\alpha/2}`) and thresholds it,
:math:`a = a_{hi}` where the field is positive, :math:`a_{lo}` elsewhere (the FNO/MgNO convention, 12 and 3); it can
be evaluated at any points.

Grid: resolution ``n`` means the nodes :math:`x_j = j/n`, :math:`j = 0,\\dots,n-1` (the "periodic" layout of
:mod:`gradlab.operators.function_space`): node 0 lies on the boundary (:math:`u = 0` there) and :math:`x = 1` is the
omitted last node, so the grid at :math:`2n` restricted to its even nodes is the grid at :math:`n`.

Discretisation: cell-centred finite volumes on the dual cells of the nodes (3-point stencil in 1-D, 5-point in 2-D),
face coefficient = harmonic mean of :math:`a` over the face's segment (midpoint rule on ``n_sub`` sub-points), so a
discontinuous :math:`a` is resolved sub-cell. The systems of all samples form one block-diagonal sparse matrix solved
with ``scipy.sparse.linalg.spsolve`` (in chunks in 2-D).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Union

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve

from gradlab.core.validation import check_int, check_positive, check_type

Forcing = Union[float, Callable[..., np.ndarray]]

__all__ = ["DarcyCoefficient", "darcy_dataset", "darcy_grid", "solve_darcy"]


def darcy_grid(n: int) -> np.ndarray:
    """Nodes :math:`x_j = j/n`, :math:`j = 0..n-1` of resolution ``n`` (float64)."""
    n = check_int("n", n, minimum=2)
    return np.arange(n, dtype=np.float64) / n


class DarcyCoefficient:
    """A batch of random piecewise-constant permeabilities defined as functions on :math:`[0,1]^d`.

    .. math::  g_b(x) = \\sum_{k} \\lambda_k\\, \\xi_{b,k}\\, \\phi_k(x), \\qquad
               \\lambda_k = (\\pi^2 |k|^2 + \\tau^2)^{-\\alpha/2}, \\qquad
               a_b(x) = a_{hi}\\,[g_b(x) > 0] + a_{lo}\\,[g_b(x) \\le 0],

    with :math:`\\phi_k(x) = \\prod_i c_{k_i}(x_i)`, :math:`c_0 = 1`, :math:`c_k = \\sqrt2\\cos(k\\pi x)`, multi-indices
    :math:`0 \\le k_i < n_{terms}` without :math:`k = 0`, and :math:`\\xi \\sim N(0, 1)` drawn once from ``seed``.

    Args:
        n_samples: number of functions in the batch.
        ndim: 1 or 2.
        n_terms: series length per dimension.
        alpha, tau: spectrum of the field (FNO's Darcy data: 2 and 3).
        a_low, a_high: the two permeability values.
        seed: seed of the coefficients.
    """

    def __init__(self, n_samples: int, ndim: int = 1, *, n_terms: int = 32, alpha: float = 2.0, tau: float = 3.0,
                 a_low: float = 3.0, a_high: float = 12.0, seed: int = 0) -> None:
        self.n_samples = check_int("n_samples", n_samples, minimum=1)
        self.ndim = check_int("ndim", ndim, minimum=1, maximum=2)
        self.n_terms = check_int("n_terms", n_terms, minimum=2)
        self.alpha = check_positive("alpha", alpha)
        self.tau = check_positive("tau", tau)
        self.a_low = check_positive("a_low", a_low)
        self.a_high = check_positive("a_high", a_high)
        check_int("seed", seed)
        rng = np.random.default_rng(seed)
        k = np.arange(self.n_terms, dtype=np.float64)
        if self.ndim == 1:
            lam = (math.pi**2 * k**2 + self.tau**2) ** (-self.alpha / 2)
            lam[0] = 0.0
        else:
            k2 = k[:, None] ** 2 + k[None, :] ** 2
            lam = (math.pi**2 * k2 + self.tau**2) ** (-self.alpha / 2)
            lam[0, 0] = 0.0
        self.coefficients = rng.standard_normal((self.n_samples,) + lam.shape) * lam

    def _basis(self, x: np.ndarray) -> np.ndarray:
        k = np.arange(self.n_terms, dtype=np.float64)
        c = math.sqrt(2.0) * np.cos(math.pi * k[:, None] * x[None, :])
        c[0] = 1.0
        return c  # (n_terms, len(x))

    def field(self, *coords: np.ndarray) -> np.ndarray:
        """The Gaussian field :math:`g_b` on the tensor grid of ``coords`` (one 1-D array per dimension)."""
        if len(coords) != self.ndim:
            raise ValueError(f"coords must hold {self.ndim} coordinate array(s); got {len(coords)}")
        xs = []
        for i, c in enumerate(coords):
            arr = np.asarray(c, dtype=np.float64)
            if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
                raise ValueError(f"coords[{i}] must be a non-empty finite 1-D array; got shape {arr.shape}")
            xs.append(arr)
        if self.ndim == 1:
            return self.coefficients @ self._basis(xs[0])
        return np.einsum("bkl,kx,ly->bxy", self.coefficients, self._basis(xs[0]), self._basis(xs[1]), optimize=True)

    def __call__(self, *coords: np.ndarray) -> np.ndarray:
        """Permeability :math:`a_b` on the tensor grid of ``coords``: shape ``(n_samples, len(x), ...)``."""
        return np.where(self.field(*coords) > 0.0, self.a_high, self.a_low)


def _forcing_values(forcing: Forcing, coords: tuple[np.ndarray, ...], batch: int) -> np.ndarray:
    shape = tuple(c.size for c in coords)
    if callable(forcing):
        grids = np.meshgrid(*coords, indexing="ij")
        val = np.asarray(forcing(*grids), dtype=np.float64)
        val = np.broadcast_to(val, (batch,) + shape) if val.shape in (shape, (1,) + shape) else val
        if val.shape != (batch,) + shape:
            raise ValueError(f"forcing must return an array of shape {shape} or {(batch,) + shape}; got {val.shape}")
    elif isinstance(forcing, numbers.Real) and not isinstance(forcing, bool):
        val = np.full((batch,) + shape, float(forcing))
    else:
        raise TypeError(f"forcing must be a real number or a callable f(*coords); got {type(forcing).__name__}")
    if not np.all(np.isfinite(val)):
        raise ValueError("forcing contains NaN or inf")
    return val


def _coefficient_values(coefficient: Callable[..., np.ndarray], coords: tuple[np.ndarray, ...]) -> np.ndarray:
    val = np.asarray(coefficient(*coords), dtype=np.float64)
    shape = tuple(c.size for c in coords)
    if val.shape == shape:
        val = val[None]
    if val.ndim != len(shape) + 1 or val.shape[1:] != shape:
        raise ValueError(f"coefficient must return an array of shape (batch, {', '.join(map(str, shape))}); "
                         f"got {val.shape}")
    if not np.all(np.isfinite(val)) or not np.all(val > 0):
        raise ValueError("coefficient must be finite and > 0 everywhere")
    return val


def _face_harmonic(coefficient: Callable[..., np.ndarray], n: int, n_sub: int, ndim: int, axis: int) -> np.ndarray:
    """Harmonic mean of ``a`` over the segment from node ``j`` to ``j+1`` along ``axis`` (face ``j + 1/2``)."""
    h = 1.0 / n
    sub = (np.arange(n)[:, None] + (np.arange(n_sub)[None, :] + 0.5) / n_sub).reshape(-1) * h
    nodes = np.arange(n, dtype=np.float64) * h
    coords = [nodes] * ndim
    coords[axis] = sub
    vals = _coefficient_values(coefficient, tuple(coords))  # (B, ..., n*n_sub, ...)
    shape = list(vals.shape)
    shape[axis + 1 : axis + 2] = [n, n_sub]
    inv = (1.0 / vals).reshape(shape).mean(axis=axis + 2)
    return 1.0 / inv


def solve_darcy(coefficient: Callable[..., np.ndarray], n: int, *, ndim: int = 1, forcing: Forcing = 1.0,
                n_sub: int = 8, chunk: int = 64) -> np.ndarray:
    """Solve :math:`-\\nabla\\cdot(a\\nabla u) = f`, :math:`u = 0` on :math:`\\partial(0,1)^d`, at resolution ``n``.

    Node equation (1-D; the 2-D 5-point stencil adds the same terms along y):

    .. math::  -\\frac{a_{j+1/2}(u_{j+1}-u_j) - a_{j-1/2}(u_j-u_{j-1})}{h^2} = f(x_j), \\qquad
               a_{j+1/2} = \\Big(\\frac1h\\int_{x_j}^{x_{j+1}} \\frac{ds}{a(s)}\\Big)^{-1},

    :math:`h = 1/n`, :math:`u_0 = u_n = 0`; the integral by the midpoint rule on ``n_sub`` points.

    Args:
        coefficient: callable ``a(*coords) -> (batch, len(x)[, len(y)])`` (e.g. a :class:`DarcyCoefficient`), > 0.
        n: resolution (nodes :math:`j/n`, :func:`darcy_grid`).
        ndim: 1 or 2 (must match ``coefficient``).
        forcing: a constant or ``f(*meshgrid) -> array`` of the node grid's shape (or with a batch dimension).
        n_sub: sub-points per face for the harmonic mean.
        chunk: samples per sparse solve in 2-D.

    Returns:
        ``u`` of shape ``(batch, n)`` or ``(batch, n, n)`` (float64) at the nodes, zero on the boundary nodes.
    """
    if not callable(coefficient):
        raise TypeError(f"coefficient must be callable a(*coords); got {type(coefficient).__name__}")
    n = check_int("n", n, minimum=2)
    ndim = check_int("ndim", ndim, minimum=1, maximum=2)
    n_sub = check_int("n_sub", n_sub, minimum=1)
    chunk = check_int("chunk", chunk, minimum=1)
    h = 1.0 / n
    nodes = darcy_grid(n)
    if ndim == 1:
        af = _face_harmonic(coefficient, n, n_sub, 1, 0)  # (B, n): faces j+1/2
        batch = af.shape[0]
        f = _forcing_values(forcing, (nodes,), batch)[:, 1:]  # interior nodes 1..n-1
        west, east = af[:, :-1], af[:, 1:]  # faces j-1/2, j+1/2 of node j=1..n-1
        diag = ((west + east) / h**2).reshape(-1)
        off = -(east[:, :-1] / h**2)  # coupling j <-> j+1 inside a sample
        off = np.concatenate([off, np.zeros((batch, 1))], axis=1).reshape(-1)[:-1]
        A = sp.diags([off, diag, off], [-1, 0, 1], format="csc")
        u_int = np.asarray(spsolve(A, f.reshape(-1))).reshape(batch, n - 1)
        return np.concatenate([np.zeros((batch, 1)), u_int], axis=1)
    ax = _face_harmonic(coefficient, n, n_sub, 2, 0)  # (B, n, n): faces (i+1/2, j)
    ay = _face_harmonic(coefficient, n, n_sub, 2, 1)  # (B, n, n): faces (i, j+1/2)
    batch = ax.shape[0]
    f = _forcing_values(forcing, (nodes, nodes), batch)[:, 1:, 1:]
    m = n - 1
    w, e = ax[:, :-1, 1:], ax[:, 1:, 1:]  # faces i-1/2, i+1/2 at interior (i, j)
    s, nn_ = ay[:, 1:, :-1], ay[:, 1:, 1:]
    idx = np.arange(m * m).reshape(m, m)
    out = np.zeros((batch, n, n))
    for start in range(0, batch, chunk):
        sl = slice(start, min(batch, start + chunk))
        nb = sl.stop - sl.start
        base = (np.arange(nb) * m * m)[:, None, None]
        k = base + idx[None]
        rows = [k.reshape(-1)]
        cols = [k.reshape(-1)]
        vals = [((w[sl] + e[sl] + s[sl] + nn_[sl]) / h**2).reshape(-1)]
        for coef, axis in ((e, 1), (nn_, 2)):
            c = coef[sl]
            if axis == 1:
                src, dst, v = k[:, :-1, :], k[:, 1:, :], c[:, :-1, :]
            else:
                src, dst, v = k[:, :, :-1], k[:, :, 1:], c[:, :, :-1]
            for a_, b_ in ((src, dst), (dst, src)):
                rows.append(a_.reshape(-1))
                cols.append(b_.reshape(-1))
                vals.append(-(v / h**2).reshape(-1))
        A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(nb * m * m, nb * m * m))
        u_int = np.asarray(spsolve(A, f[sl].reshape(-1), permc_spec="MMD_AT_PLUS_A")).reshape(nb, m, m)
        out[sl, 1:, 1:] = u_int
    return out


def darcy_dataset(coefficient: DarcyCoefficient, n: int, *, forcing: Forcing = 1.0, n_sub: int = 8,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(a, u)`` at resolution ``n`` as tensors of shape ``(batch, 1, n)`` or ``(batch, 1, n, n)``.

    ``a`` is the coefficient function sampled at the nodes :math:`j/n`; ``u`` is :func:`solve_darcy`'s solution.
    The same ``coefficient`` object gives the same functions at every ``n``.
    """
    check_type("coefficient", coefficient, DarcyCoefficient)
    check_type("dtype", dtype, torch.dtype)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype; got {dtype}")
    nodes = darcy_grid(n)
    a = coefficient(*([nodes] * coefficient.ndim))
    u = solve_darcy(coefficient, n, ndim=coefficient.ndim, forcing=forcing, n_sub=n_sub)
    return (torch.as_tensor(a, dtype=dtype).unsqueeze(1), torch.as_tensor(u, dtype=dtype).unsqueeze(1))
