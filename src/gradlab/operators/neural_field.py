r"""OReX: a neural indicator field fitted to planar cross-sections (Sawdayee, Vaxman & Bermano, CVPR 2023,
arXiv 2211.12886).

Input: planes of any orientation, each carrying an in/out indicator (the cross-section). Output: an occupancy
field on :math:`\mathbb{R}^3` whose 0-logit level set is the reconstructed surface.

**Labels.** Here 1 = inside, 0 = outside and 0.5 = on a contour, so a positive logit means inside. The official
code (``Globals.py``: ``INSIDE_LABEL = 0``, ``OUTSIDE_LABEL = 1``) uses the opposite convention; its logits are the
negatives of ours.

**Network** (:class:`OReXField`, iterative estimation, paper Sec. 3). A shared MLP :math:`g` is applied
:math:`K` times; the state is a logit :math:`\ell_k` and a hidden vector :math:`s_k`:

.. math::

    [\ell_{k+1} - \ell_k,\; s_{k+1}] = g\big(\gamma(x),\, \ell_k,\, s_k + \psi(k)\big), \qquad k = 0..K-1,

with learned constants :math:`\ell_0, s_0`, a sinusoidal code :math:`\psi(k)` of the iteration index and learnable
Fourier features :math:`\gamma(x) = [x,\ \cos(\omega^c_f x_d),\ \sin(\omega^s_f x_d)]`, frequencies initialised to
:math:`2^0 \dots 2^{F-1}`. LeakyReLU MLP, Xavier-uniform weights, :math:`U(0,1)` biases (official defaults).

**Loss** (:func:`orex_loss`): binary cross-entropy on the logits of *every* iteration plus a hinge on the spatial
gradient of the last logit, which removes the ripples that marching cubes produces on a near-step field:

.. math::

    \mathcal{L} = \frac1K \sum_{k=1}^{K} \mathrm{BCE}(\ell_k(x), y)
        + \lambda\, \operatorname{mean}_x \max\big(\lVert \nabla_x \ell_K(x) \rVert - \alpha,\ 0\big),
    \qquad \lambda = 10^{-4},\ \alpha = 100.

**Sampling** (:class:`CrossSectionSampler`, coarse to fine): at refinement level :math:`l`, points at distance
:math:`r_l = 0.5^{e_l}` on both sides of the contours (:math:`e = 4,5,5,6,6,7`), points on the contours (label
0.5), uniform points on every plane, and points on the convex hull of the contours enlarged by 5 % (label
outside). Training at level :math:`l` uses the data of the last three levels (:func:`fit_orex`).

**Meshing** (:func:`extract_mesh`): marching cubes (scikit-image) at the logit-0 level. The official code uses dual
contouring; marching cubes is the simpler equivalent and is where the ripple effect the hinge addresses appears.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_int, check_positive, check_range, check_tensor, check_type

__all__ = [
    "INSIDE",
    "OUTSIDE",
    "ON_CONTOUR",
    "LearnableFourierFeatures",
    "OReXField",
    "OReXLoss",
    "gradient_hinge",
    "orex_loss",
    "plane_basis",
    "CrossSectionSampler",
    "fit_orex",
    "grid_points_3d",
    "evaluate_grid",
    "extract_mesh",
]

INSIDE = 1.0
OUTSIDE = 0.0
ON_CONTOUR = 0.5

InsideFn = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------------- network


class LearnableFourierFeatures(nn.Module):
    r"""Learnable Fourier features :math:`\gamma(x) = [x,\ \cos(\omega^c_f x_d),\ \sin(\omega^s_f x_d)]`.

    Cosine and sine frequencies are separate parameters (as in the official code), both initialised to
    :math:`2^0, \dots, 2^{F-1}`. Output width ``in_features * (1 + 2 * n_freqs)``.
    """

    def __init__(self, in_features: int = 3, n_freqs: int = 5, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.n_freqs = check_int("n_freqs", n_freqs, minimum=0)
        init = 2.0 ** torch.arange(self.n_freqs, dtype=torch.float64)
        self.cos_freqs = nn.Parameter(init.to(dtype=dtype or torch.get_default_dtype(), device=device))
        self.sin_freqs = nn.Parameter(init.clone().to(dtype=dtype or torch.get_default_dtype(), device=device))
        self.out_features = self.in_features * (1 + 2 * self.n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        cos = torch.cos(x[..., None] * self.cos_freqs).reshape(n, -1)
        sin = torch.sin(x[..., None] * self.sin_freqs).reshape(n, -1)
        return torch.cat((x, cos, sin), dim=-1)


def _iteration_code(k: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r""":math:`\psi(k) = [\sin(2^j k), \cos(2^j k)]_{j < dim/2}` (computed in float64, then cast)."""
    freqs = 2.0 ** torch.arange(dim // 2, dtype=torch.float64)
    ang = float(k) * freqs
    return torch.stack((torch.sin(ang), torch.cos(ang)), dim=-1).reshape(-1).to(dtype=dtype, device=device)


class OReXField(nn.Module):
    r"""OReX occupancy field with iterative logit refinement (arXiv 2211.12886, Sec. 3).

    ``field(x)`` maps points ``(N, 3)`` to the final logits ``(N,)`` (positive = inside); with
    ``all_iterations=True`` it returns the logits of every iteration ``(K, N)``, which the loss supervises.

    Args:
        n_freqs: learnable Fourier frequencies per coordinate (official 5).
        hidden_state: size of the hidden vector :math:`s_k` (official 32; even, for the sin/cos iteration code).
        width: neurons per hidden layer (official 64).
        depth: hidden layers (official 7).
        n_iterations: :math:`K`, applications of the shared MLP (official 10; 1 = no iterative refinement).
        negative_slope: LeakyReLU slope.
        generator: ``torch.Generator`` for the initialisation (default: the global generator).
        dtype, device: of the parameters (the official code runs in float64).
    """

    def __init__(self, *, n_freqs: int = 5, hidden_state: int = 32, width: int = 64, depth: int = 7,
                 n_iterations: int = 10, negative_slope: float = 0.01, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        check_int("hidden_state", hidden_state, minimum=2)
        if hidden_state % 2:
            raise ValueError(f"hidden_state must be even (sin/cos pairs of the iteration code); got {hidden_state}")
        self.hidden_state = hidden_state
        self.width = check_int("width", width, minimum=1)
        self.depth = check_int("depth", depth, minimum=1)
        self.n_iterations = check_int("n_iterations", n_iterations, minimum=1)
        check_positive("negative_slope", negative_slope, allow_zero=True)
        if generator is not None:
            check_type("generator", generator, torch.Generator)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
        self.encoding = LearnableFourierFeatures(3, n_freqs, dtype=dtype, device=device)
        sizes = [self.encoding.out_features + 1 + hidden_state] + [width] * depth
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b, dtype=dtype, device=device), nn.LeakyReLU(negative_slope)]
        layers.append(nn.Linear(width, 1 + hidden_state, dtype=dtype, device=device))
        self.mlp = nn.Sequential(*layers)
        self.initial_logit = nn.Parameter(torch.empty(1, dtype=dtype, device=device))
        self.initial_state = nn.Parameter(torch.empty(hidden_state, dtype=dtype, device=device))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Xavier-uniform weights, U(0, 1) biases and initial state (the official initialisation)."""
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                bound = math.sqrt(6.0 / (m.in_features + m.out_features))
                m.weight.copy_(_uniform(m.weight.shape, -bound, bound, generator, m.weight))
                m.bias.copy_(_uniform(m.bias.shape, 0.0, 1.0, generator, m.bias))
        self.initial_logit.copy_(_uniform((1,), 0.0, 1.0, generator, self.initial_logit))
        self.initial_state.copy_(_uniform((self.hidden_state,), 0.0, 1.0, generator, self.initial_state))

    def forward(self, x: torch.Tensor, *, all_iterations: bool = False,
                n_iterations: int | None = None) -> torch.Tensor:
        """Logits at ``x`` ``(N, 3)``: final ``(N,)``, or every iteration's ``(K, N)`` with ``all_iterations``."""
        check_tensor("x", x, ndim=2, floating=True)
        if x.shape[1] != 3:
            raise ValueError(f"x must have shape (N, 3); got {tuple(x.shape)}")
        p = self.initial_logit
        if x.dtype != p.dtype or x.device != p.device:
            raise TypeError(f"x must have the field's dtype {p.dtype} on {p.device}; got {x.dtype} on {x.device}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or inf")
        k_total = self.n_iterations if n_iterations is None else check_int("n_iterations", n_iterations, minimum=1)
        n = x.shape[0]
        gamma = self.encoding(x)
        logit = self.initial_logit.expand(n, 1)
        state = self.initial_state.expand(n, self.hidden_state)
        outs = []
        for k in range(k_total):
            code = _iteration_code(k, self.hidden_state, p.dtype, p.device)
            out = self.mlp(torch.cat((gamma, logit, state + code), dim=1))
            logit = logit + out[:, :1]
            state = out[:, 1:]
            outs.append(logit[:, 0])
        return torch.stack(outs) if all_iterations else outs[-1]


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator | None,
             like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64)
    return (low + (high - low) * u).to(dtype=like.dtype, device=like.device)


# ----------------------------------------------------------------------------------------------- loss


class OReXLoss(NamedTuple):
    """The OReX objective and its parts: ``total = bce + lam * hinge``."""

    total: torch.Tensor
    bce: torch.Tensor
    hinge: torch.Tensor


def gradient_hinge(logits: torch.Tensor, x: torch.Tensor, alpha: float = 100.0, *,
                   create_graph: bool = True) -> torch.Tensor:
    r""":math:`\operatorname{mean}_i \max(\lVert \nabla_x \ell(x_i) \rVert - \alpha, 0)`.

    ``logits`` ``(N,)`` must have been computed from ``x`` ``(N, 3)`` (``x.requires_grad``) by a *pointwise* field
    (``logits[i]`` depends only on ``x[i]``), so that :math:`\nabla_x \sum_i \ell_i` holds every point's gradient.
    With ``create_graph`` (default) the result is differentiable with respect to the field's parameters.
    """
    check_tensor("logits", logits, ndim=1, floating=True)
    check_tensor("x", x, ndim=2, floating=True)
    if logits.shape[0] != x.shape[0]:
        raise ValueError(f"logits and x must have the same number of points; got {logits.shape[0]} and {x.shape[0]}")
    alpha = check_positive("alpha", alpha, allow_zero=True)
    if not x.requires_grad:
        raise ValueError("x must require grad and logits must be computed from it")
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=create_graph)
    return torch.clamp(grad.norm(dim=-1) - alpha, min=0.0).mean()


def orex_loss(field: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, lam: float = 1e-4,
              alpha: float = 100.0) -> OReXLoss:
    r"""OReX loss: BCE on every iteration's logits plus :math:`\lambda` times the gradient hinge.

    .. math:: \frac1K \sum_k \mathrm{BCE}(\ell_k, y) + \lambda\,\operatorname{mean}\max(\lVert\nabla_x\ell_K\rVert-\alpha, 0)

    Args:
        field: an :class:`OReXField` (anything called as ``field(x, all_iterations=True) -> (K, N)``).
        x: points ``(N, 3)``; a leaf copy that requires grad is made internally.
        labels: ``(N,)`` in [0, 1]: 1 inside, 0 outside, 0.5 on a contour.
        lam: weight of the hinge (official 1e-4; 0 switches it off and skips the double backward).
        alpha: gradient norm allowed before the hinge acts (official 100).
    """
    check_type("field", field, nn.Module)
    check_tensor("x", x, ndim=2, floating=True, finite=True)
    if x.shape[1] != 3:
        raise ValueError(f"x must have shape (N, 3); got {tuple(x.shape)}")
    check_tensor("labels", labels, ndim=1, floating=True, finite=True)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have one value per point ({x.shape[0]}); got {labels.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one point")
    if bool(((labels < 0) | (labels > 1)).any()):
        raise ValueError("labels must lie in [0, 1] (1 inside, 0 outside, 0.5 on a contour)")
    lam = check_positive("lam", lam, allow_zero=True)
    alpha = check_positive("alpha", alpha, allow_zero=True)
    xg = x.detach().clone().requires_grad_(lam > 0)
    all_logits = field(xg, all_iterations=True)
    if all_logits.ndim != 2 or all_logits.shape[1] != x.shape[0]:
        raise ValueError(f"field(x, all_iterations=True) must return (K, N); got {tuple(all_logits.shape)}")
    target = labels.to(all_logits.dtype).expand_as(all_logits)
    bce = F.binary_cross_entropy_with_logits(all_logits, target)  # equal N per iteration: mean of the K means
    hinge = gradient_hinge(all_logits[-1], xg, alpha) if lam > 0 else all_logits.new_zeros(())
    return OReXLoss(bce + lam * hinge, bce, hinge)


# ----------------------------------------------------------------------------------------------- sampling


def plane_basis(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit normals ``n`` and in-plane orthonormal axes ``u, v`` (right-handed: ``u x v = n``), each ``(P, 3)``.

    ``u`` is built from the coordinate axis least aligned with ``n``, so the basis is deterministic; for the
    plane z = c it is ``u = x``, ``v = y``.
    """
    n = np.asarray(normals, dtype=np.float64)
    if n.ndim != 2 or n.shape[1] != 3:
        raise ValueError(f"normals must have shape (P, 3); got {n.shape}")
    if not np.all(np.isfinite(n)):
        raise ValueError("normals contain NaN or inf")
    norms = np.linalg.norm(n, axis=1)
    if np.any(norms < 1e-12):
        raise ValueError("normals must be non-zero vectors")
    n = n / norms[:, None]
    helper = np.eye(3)[np.argmin(np.abs(n), axis=1)]
    # for n = e_z the least aligned axis is e_x: u = e_x, v = e_y
    u = helper - (helper * n).sum(1, keepdims=True) * n
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(n, u)
    return n, u, v


class CrossSectionSampler:
    r"""Training points for OReX from cross-sections given by planes and an in/out test on them.

    Each plane ``(origin, normal)`` is rasterised on a square grid of spacing ``spacing`` in its own coordinates
    (``plane_basis``) over ``[-extent, extent]^2``, keeping the raster points inside the box ``[-bound, bound]^3``.
    The contours are located to floating-point accuracy by bisection on every raster edge whose two ends have
    different labels; their in-plane normals come from the gradient of the Gaussian-smoothed raster.
    ``inside`` is only ever called on points of the planes, so it stands for the slice data (an analytic shape
    here; a polygon-in test for real contour data).

    :meth:`sample` (refinement level ``l``) returns, per the official sampler: ``samples_per_point[l]`` points on
    each side of every contour point at distance ``0.5 ** radius_exp[l]`` along its normal (jittered along the
    contour by at most half a raster cell), labelled by ``inside``; the contour points themselves, labelled 0.5;
    ``n_uniform`` uniform points per plane; and ``n_hull`` points on the convex hull of all contour points
    enlarged by ``hull_margin`` about their centroid, labelled outside (0).

    Args:
        inside: ``inside(points (N, 3) float64) -> bool (N,)`` (True = inside).
        origins, normals: ``(P, 3)`` a point on each plane and its normal (any orientation).
        bound: half-width of the reconstruction box.
        extent: half-width of each plane's raster (default ``sqrt(3) * bound`` covers the box for any plane).
        spacing: raster spacing in plane units.
        radius_exp, samples_per_point: per refinement level (official ``(4, 5, 5, 6, 6, 7)``, ``(2, 2, 3, 3, 4, 5)``).
        n_uniform, n_hull, hull_margin: official 2048, 2**14, 0.05.
    """

    def __init__(self, inside: InsideFn, origins: Any, normals: Any, *, bound: float = 1.0,
                 extent: float | None = None, spacing: float = 1.0 / 128,
                 radius_exp: Sequence[int] = (4, 5, 5, 6, 6, 7), samples_per_point: Sequence[int] = (2, 2, 3, 3, 4, 5),
                 n_uniform: int = 2048, n_hull: int = 2**14, hull_margin: float = 0.05) -> None:
        if not callable(inside):
            raise TypeError(f"inside must be callable points -> bool array; got {type(inside).__name__}")
        o = np.asarray(origins, dtype=np.float64)
        if o.ndim != 2 or o.shape[1] != 3 or o.shape[0] == 0:
            raise ValueError(f"origins must have shape (P, 3) with P >= 1; got {o.shape}")
        if not np.all(np.isfinite(o)):
            raise ValueError("origins contain NaN or inf")
        self.normals, self.u, self.v = plane_basis(normals)
        if self.normals.shape[0] != o.shape[0]:
            raise ValueError(f"origins and normals must pair up; got {o.shape[0]} and {self.normals.shape[0]}")
        self.origins = o
        self.bound = check_positive("bound", bound)
        self.extent = math.sqrt(3.0) * self.bound if extent is None else check_positive("extent", extent)
        self.spacing = check_range("spacing", spacing, 0.0, self.extent, low_inclusive=False)
        self.radius_exp = tuple(check_int("radius_exp", e, minimum=0) for e in radius_exp)
        self.samples_per_point = tuple(check_int("samples_per_point", s, minimum=0) for s in samples_per_point)
        if len(self.radius_exp) == 0 or len(self.radius_exp) != len(self.samples_per_point):
            raise ValueError("radius_exp and samples_per_point must be non-empty and of equal length (one per level); "
                             f"got {len(self.radius_exp)} and {len(self.samples_per_point)}")
        self.n_uniform = check_int("n_uniform", n_uniform, minimum=0)
        self.n_hull = check_int("n_hull", n_hull, minimum=0)
        self.hull_margin = check_positive("hull_margin", hull_margin, allow_zero=True)
        self.inside = inside
        self._locate_contours()
        self._build_hull()

    @property
    def n_levels(self) -> int:
        return len(self.radius_exp)

    @property
    def n_planes(self) -> int:
        return self.origins.shape[0]

    def _label(self, points: np.ndarray) -> np.ndarray:
        out = np.asarray(self.inside(points))
        if out.shape != (points.shape[0],):
            raise ValueError(f"inside(points) must return one value per point, shape ({points.shape[0]},); "
                             f"got {out.shape}")
        return out.astype(bool)

    def _in_box(self, p: np.ndarray) -> np.ndarray:
        return np.all(np.abs(p) <= self.bound, axis=-1)

    def to_3d(self, plane: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """3-D points of plane coordinates ``(a, b)`` on planes ``plane`` (index arrays of equal shape)."""
        return self.origins[plane] + a[..., None] * self.u[plane] + b[..., None] * self.v[plane]

    def _locate_contours(self) -> None:
        from scipy import ndimage

        m = int(math.floor(2 * self.extent / self.spacing)) + 1
        axis = -self.extent + self.spacing * np.arange(m)
        aa, bb = np.meshgrid(axis, axis, indexing="ij")
        pts = self.origins[:, None, None] + aa[None, ..., None] * self.u[:, None, None] + bb[None, ..., None] * self.v[:, None, None]
        valid = self._in_box(pts)
        occ = self._label(pts.reshape(-1, 3)).reshape(pts.shape[:3]) & valid
        self._raster_axis = axis
        self.raster_inside_fraction = float(occ.sum() / max(valid.sum(), 1))
        plane_l, a_l, b_l, a_r, b_r = [], [], [], [], []
        for di, dj in ((1, 0), (0, 1)):  # edges along a, then along b (vectorised over planes and edges)
            p0 = (slice(None), slice(0, m - di), slice(0, m - dj))
            p1 = (slice(None), slice(di, m), slice(dj, m))
            cross = (occ[p0] != occ[p1]) & valid[p0] & valid[p1]
            idx = np.nonzero(cross)
            plane_l.append(idx[0])
            a_l.append(axis[idx[1]]); b_l.append(axis[idx[2]])
            a_r.append(axis[idx[1] + di]); b_r.append(axis[idx[2] + dj])
        plane = np.concatenate(plane_l)
        a0, b0, a1, b1 = (np.concatenate(t) for t in (a_l, b_l, a_r, b_r))
        lab0 = self._label(self.to_3d(plane, a0, b0)) if plane.size else np.zeros(0, bool)
        # bisection: keep (lo, hi) with label(lo) = lab0 != label(hi)
        lo_a, lo_b, hi_a, hi_b = a0.copy(), b0.copy(), a1.copy(), b1.copy()
        for _ in range(30):
            mid_a, mid_b = 0.5 * (lo_a + hi_a), 0.5 * (lo_b + hi_b)
            same = self._label(self.to_3d(plane, mid_a, mid_b)) == lab0 if plane.size else np.zeros(0, bool)
            lo_a, lo_b = np.where(same, mid_a, lo_a), np.where(same, mid_b, lo_b)
            hi_a, hi_b = np.where(same, hi_a, mid_a), np.where(same, hi_b, mid_b)
        ca, cb = 0.5 * (lo_a + hi_a), 0.5 * (lo_b + hi_b)
        # in-plane normals (pointing inside) from the smoothed raster's gradient, in raster index units
        smooth = ndimage.gaussian_filter(occ.astype(np.float64), sigma=(0, 1.5, 1.5))
        ga = np.gradient(smooth, axis=1)
        gb = np.gradient(smooth, axis=2)
        fi = (ca + self.extent) / self.spacing
        fj = (cb + self.extent) / self.spacing
        coords = np.stack((plane.astype(np.float64), fi, fj))
        na = ndimage.map_coordinates(ga, coords, order=1) if plane.size else np.zeros(0)
        nb = ndimage.map_coordinates(gb, coords, order=1) if plane.size else np.zeros(0)
        # fall back on the raster edge direction (towards the inside end) where the gradient vanishes
        sign = np.where(lab0, -1.0, 1.0)
        ea, eb = sign * (a1 - a0), sign * (b1 - b0)
        norm = np.hypot(na, nb)
        weak = norm < 1e-8
        na, nb = np.where(weak, ea, na), np.where(weak, eb, nb)
        norm = np.hypot(na, nb)
        na, nb = na / norm, nb / norm
        self.contour_plane = plane
        self.contour_ab = np.stack((ca, cb), axis=1)
        self.contour_points = self.to_3d(plane, ca, cb)
        self.contour_normals = na[:, None] * self.u[plane] + nb[:, None] * self.v[plane]
        self.contour_tangents = np.cross(self.normals[plane], self.contour_normals)

    def _build_hull(self) -> None:
        from scipy.spatial import ConvexHull, QhullError

        pts = self.contour_points
        self.hull = None
        if pts.shape[0] < 4:
            return
        center = pts.mean(0)
        # every k-th contour point (at most ~1024): the hull of a dense contour has thousands of facets, and the
        # chord error of the subsample (~1e-3 for unit-sized shapes) is far below the hull margin
        pts = pts[:: max(1, math.ceil(pts.shape[0] / 1024))]
        try:
            hull = ConvexHull(center + (1.0 + self.hull_margin) * (pts - center))
        except QhullError:  # all contour points coplanar (a single plane): no 3-D hull
            return
        self.hull = hull
        tri = hull.points[hull.simplices]  # (F, 3, 3)
        self._hull_tri = tri
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        self._hull_cdf = np.cumsum(area) / area.sum()

    def in_hull(self, points: np.ndarray) -> np.ndarray:
        """Whether ``points (N, 3)`` lie inside the enlarged convex hull (all True when there is no 3-D hull)."""
        p = np.asarray(points, dtype=np.float64)
        if self.hull is None:
            return np.ones(p.shape[0], dtype=bool)
        eq = self.hull.equations
        out = np.empty(p.shape[0], dtype=bool)
        step = max(1, 2**20 // max(eq.shape[0], 1))  # bounded memory: chunks of ~1M point-facet pairs
        for s in range(0, p.shape[0], step):
            out[s:s + step] = np.all(p[s:s + step] @ eq[:, :3].T + eq[:, 3] <= 1e-12, axis=1)
        return out

    def hull_points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points uniformly (by area) on the enlarged hull's surface."""
        if self.hull is None or n == 0:
            return np.zeros((0, 3))
        f = np.minimum(np.searchsorted(self._hull_cdf, rng.random(n)), len(self._hull_cdf) - 1)
        r1, r2 = rng.random(n), rng.random(n)
        s = np.sqrt(r1)
        w = np.stack((1 - s, s * (1 - r2), s * r2), axis=1)
        return np.einsum("nk,nkd->nd", w, self._hull_tri[f])

    def plane_points(self, n_per_plane: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n_per_plane`` uniform points on each plane inside the box, with their labels (1/0)."""
        check_int("n_per_plane", n_per_plane, minimum=0)
        plane = np.repeat(np.arange(self.n_planes), n_per_plane)
        ab = rng.uniform(-self.extent, self.extent, size=(plane.size, 2))
        p = self.to_3d(plane, ab[:, 0], ab[:, 1])
        p = p[self._in_box(p)]
        return p, self._label(p).astype(np.float64)

    def near_contour_points(self, level: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Points at distance ``0.5 ** radius_exp[level]`` on both sides of the contours, with labels (1/0)."""
        level = check_int("level", level, minimum=0, maximum=self.n_levels - 1)
        k = self.samples_per_point[level]
        r = 0.5 ** self.radius_exp[level]
        c = np.repeat(self.contour_points, k, axis=0)
        nrm = np.repeat(self.contour_normals, k, axis=0)
        tan = np.repeat(self.contour_tangents, k, axis=0)
        jitter = rng.uniform(-0.5 * self.spacing, 0.5 * self.spacing, size=(c.shape[0], 1))
        base = c + jitter * tan
        p = np.concatenate((base + r * nrm, base - r * nrm))
        p = p[self._in_box(p)]
        return p, self._label(p).astype(np.float64)

    def sample(self, level: int, seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray]:
        """Training points ``(N, 3)`` and labels ``(N,)`` (1 inside, 0 outside, 0.5 on a contour) of ``level``."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_int("seed", seed, minimum=0))
        near, near_y = self.near_contour_points(level, rng)
        uni, uni_y = self.plane_points(self.n_uniform, rng)
        hull = self.hull_points(self.n_hull, rng)
        pts = np.concatenate((near, self.contour_points, uni, hull))
        labels = np.concatenate((near_y, np.full(self.contour_points.shape[0], ON_CONTOUR), uni_y,
                                 np.full(hull.shape[0], OUTSIDE)))
        return pts, labels


# ----------------------------------------------------------------------------------------------- training


def fit_orex(field: OReXField, sampler: CrossSectionSampler, steps_per_level: Sequence[int], *,
             batch_size: int = 2**14, lr: float = 1e-2, weight_decay: float = 1e-3, lr_gamma: float = 0.9,
             lr_every: int = 10, lam: float = 1e-4, alpha: float = 100.0, n_used_levels: int = 3, seed: int = 0,
             callback: Callable[[int, int, OReXLoss], None] | None = None) -> dict[str, list[float]]:
    """Train ``field`` coarse to fine on ``sampler``'s levels with Adam (the official recipe, in steps).

    Level ``l`` is trained for ``steps_per_level[l]`` steps on the union of the last ``n_used_levels`` levels'
    samples (reshuffled every pass); Adam with L2 ``weight_decay``, the learning rate multiplied by ``lr_gamma``
    every ``lr_every`` steps. Returns the per-step ``total``, ``bce`` and ``hinge`` losses.
    """
    check_type("field", field, nn.Module)
    check_type("sampler", sampler, CrossSectionSampler)
    steps = [check_int("steps_per_level", s, minimum=0) for s in steps_per_level]
    if not 1 <= len(steps) <= sampler.n_levels:
        raise ValueError(f"steps_per_level needs 1 to {sampler.n_levels} entries (one per level); got {len(steps)}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    check_range("lr_gamma", lr_gamma, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
    lr_every = check_int("lr_every", lr_every, minimum=1)
    n_used_levels = check_int("n_used_levels", n_used_levels, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    p0 = next(field.parameters())
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(field.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_gamma)
    history: dict[str, list[float]] = {"total": [], "bce": [], "hinge": []}
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    step = 0
    field.train()
    for level, n_steps in enumerate(steps):
        levels.append(sampler.sample(level, rng))
        used = levels[-n_used_levels:]
        x_all = torch.from_numpy(np.concatenate([u[0] for u in used])).to(dtype=p0.dtype, device=p0.device)
        y_all = torch.from_numpy(np.concatenate([u[1] for u in used])).to(dtype=p0.dtype, device=p0.device)
        n = x_all.shape[0]
        perm, pos = torch.randperm(n, generator=gen), 0
        for _ in range(n_steps):
            if pos + min(batch_size, n) > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + batch_size].to(p0.device)
            pos += batch_size
            loss = orex_loss(field, x_all[idx], y_all[idx], lam=lam, alpha=alpha)
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            opt.step()
            step += 1
            if step % lr_every == 0:
                sched.step()
            for key, val in zip(("total", "bce", "hinge"), loss):
                history[key].append(float(val.detach()))
            if callback is not None:
                callback(level, step, loss)
    field.eval()
    return history


# ----------------------------------------------------------------------------------------------- grids, meshes


def grid_points_3d(resolution: int, bound: float = 1.0) -> np.ndarray:
    """Points ``(R**3, 3)`` of the ``R x R x R`` grid ``linspace(-bound, bound, R)``, ``ij`` order (x slowest)."""
    resolution = check_int("resolution", resolution, minimum=2)
    bound = check_positive("bound", bound)
    ax = np.linspace(-bound, bound, resolution)
    return np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)


@torch.no_grad()
def evaluate_grid(field: nn.Module, resolution: int, bound: float = 1.0, *, batch_size: int = 2**16) -> np.ndarray:
    """``field``'s final logits on :func:`grid_points_3d` as a float64 array ``(R, R, R)``, evaluated in batches."""
    check_type("field", field, nn.Module)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    pts = grid_points_3d(resolution, bound)
    p0 = next(field.parameters())
    out = np.empty(pts.shape[0])
    was_training = field.training
    field.eval()
    for s in range(0, pts.shape[0], batch_size):
        x = torch.from_numpy(pts[s:s + batch_size]).to(dtype=p0.dtype, device=p0.device)
        out[s:s + batch_size] = field(x).double().cpu().numpy()
    field.train(was_training)
    return out.reshape(resolution, resolution, resolution)


def extract_mesh(volume: Any, *, bound: float = 1.0, level: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes (``skimage.measure.marching_cubes``) of a grid of logits at ``level`` (default 0).

    ``volume`` ``(R, R, R)`` (numpy or torch) holds values on :func:`grid_points_3d` (positive = inside). Returns
    vertices ``(V, 3)`` in world coordinates of ``[-bound, bound]^3`` and triangles ``(F, 3)`` whose
    right-handed normals point outwards (from positive to negative values).

    Needs scikit-image (``pip install gradlab[operators]``).
    """
    try:
        from skimage.measure import marching_cubes
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("extract_mesh needs scikit-image: install the `operators` extra "
                          "(pip install 'gradlab[operators]')") from err
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().double().cpu().numpy()
    if not isinstance(volume, np.ndarray):
        raise TypeError(f"volume must be a numpy array or torch.Tensor; got {type(volume).__name__}")
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f"volume must be a 3-D grid with at least 2 points per axis; got shape {volume.shape}")
    if not np.issubdtype(volume.dtype, np.number) or np.issubdtype(volume.dtype, np.complexfloating):
        raise TypeError(f"volume must hold real numbers; got dtype {volume.dtype}")
    vol = volume.astype(np.float64)
    if not np.all(np.isfinite(vol)):
        raise ValueError("volume contains NaN or inf")
    bound = check_positive("bound", bound)
    level = float(check_range("level", level, -math.inf, math.inf))
    if not (vol.min() < level < vol.max()):
        raise ValueError(f"volume does not cross level {level} (range [{vol.min():.4g}, {vol.max():.4g}]): no surface")
    spacing = tuple(2 * bound / (s - 1) for s in vol.shape)
    verts, faces, _, _ = marching_cubes(vol, level=level, spacing=spacing, gradient_direction="descent")
    # skimage's winding makes the right-hand normals point towards larger values: reverse it (outwards)
    return verts - bound, np.ascontiguousarray(faces[:, ::-1]).astype(np.int64)
