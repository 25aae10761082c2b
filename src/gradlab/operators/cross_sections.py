r"""Analytic test shapes, classical slice-interpolation baselines and mesh/volume metrics for reconstruction from
planar cross-sections (the setting of OReX, arXiv 2211.12886; see :mod:`gradlab.operators.neural_field`).

Shapes (inside-functions with exact signed distances, label 1 = inside):

* :class:`Torus`: :math:`d(p) = \sqrt{(\rho(p) - R)^2 + h(p)^2} - r` with :math:`h` the coordinate along the axis
  and :math:`\rho` the distance to the axis.
* :class:`SphereUnion`: :math:`d(p) = \min_i (\lVert p - c_i \rVert - r_i)` (exact outside, a bound inside).

Baselines (use only what the slices show, like the neural field):

* :func:`nearest_slice_extrusion`: a point takes the label of its orthogonal projection on the nearest plane (any
  orientation).
* :func:`sdf_interpolation`: classical shape-based interpolation: the 2-D signed distance of each parallel slice
  (Euclidean distance transform of its raster) is interpolated linearly between the two bracketing slices and
  thresholded at 0; beyond the outermost slices the nearest slice's distance is used. Parallel slices only.

Metrics:

* :func:`volume_iou`: :math:`|A \cap B| / |A \cup B|` of two boolean grids.
* :func:`ripple_score`: area-weighted mean angle (degrees) between each mesh face's normal and the area-weighted
  mean normal of the faces whose centroids lie within ``radius`` of its centroid (itself included):

  .. math:: \mathrm{ripple} = \frac{\sum_f A_f\, \angle(n_f, m_f)}{\sum_f A_f}, \qquad
            m_f = \sum_{g:\ \lVert c_g - c_f \rVert \le \rho} A_g n_g.

  It is ground-truth free and sees only normal variation on scales below :math:`\rho`: the terraces marching cubes
  leaves on a near-step field (the "ripple-like effect" of the paper) raise it, smooth shape errors do not.
* :func:`normal_error`: area-weighted mean angle between face normals and the analytic surface normal
  (:math:`\nabla d` at the face centroid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gradlab.core.validation import check_int, check_positive, check_choice
from gradlab.operators.neural_field import plane_basis

__all__ = [
    "Torus",
    "SphereUnion",
    "parallel_planes",
    "oblique_planes",
    "nearest_slice_extrusion",
    "sdf_interpolation",
    "volume_iou",
    "face_geometry",
    "ripple_score",
    "normal_error",
]

_AXES = {"x": 0, "y": 1, "z": 2}


def _points(name: str, p: Any) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3); got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contain NaN or inf")
    return a


@dataclass(frozen=True)
class Torus:
    """Solid torus of major radius ``R`` and tube radius ``r`` around ``axis`` through ``center``."""

    R: float = 0.5
    r: float = 0.25
    axis: str = "y"
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        check_positive("R", self.R)
        check_positive("r", self.r)
        if self.r >= self.R:
            raise ValueError(f"r must be smaller than R (a ring torus); got r={self.r}, R={self.R}")
        check_choice("axis", self.axis, tuple(_AXES))

    def sdf(self, p: Any) -> np.ndarray:
        q = _points("points", p) - np.asarray(self.center)
        k = _AXES[self.axis]
        h = q[:, k]
        rho = np.sqrt(np.sum(np.delete(q, k, axis=1) ** 2, axis=1))
        return np.hypot(rho - self.R, h) - self.r

    def __call__(self, p: Any) -> np.ndarray:
        return self.sdf(p) < 0

    @property
    def volume(self) -> float:
        return 2 * math.pi**2 * self.R * self.r**2


@dataclass(frozen=True)
class SphereUnion:
    """Union of balls ``centers[i]``, ``radii[i]`` (overlapping balls give a shape that merges between slices)."""

    centers: tuple[tuple[float, float, float], ...] = ((-0.35, 0.0, -0.15), (0.4, 0.0, 0.2))
    radii: tuple[float, ...] = (0.5, 0.4)

    def __post_init__(self) -> None:
        c = np.asarray(self.centers, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != 3 or c.shape[0] == 0 or len(self.radii) != c.shape[0]:
            raise ValueError("centers must be (n, 3) with n >= 1 and one radius per center; "
                             f"got {c.shape} and {len(self.radii)} radii")
        for r in self.radii:
            check_positive("radii", r)

    def sdf(self, p: Any) -> np.ndarray:
        q = _points("points", p)
        c = np.asarray(self.centers)
        d = np.linalg.norm(q[:, None, :] - c[None], axis=2) - np.asarray(self.radii)[None]
        return d.min(axis=1)

    def __call__(self, p: Any) -> np.ndarray:
        return self.sdf(p) < 0


def parallel_planes(n: int, low: float, high: float, axis: str = "z") -> tuple[np.ndarray, np.ndarray]:
    """``n`` planes normal to ``axis`` at the cell midpoints ``low + (high - low) (k + 1/2) / n``."""
    n = check_int("n", n, minimum=1)
    check_choice("axis", axis, tuple(_AXES))
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"need finite low < high; got low={low!r}, high={high!r}")
    t = low + (high - low) * (np.arange(n) + 0.5) / n
    normals = np.zeros((n, 3))
    normals[:, _AXES[axis]] = 1.0
    origins = normals * t[:, None]
    return origins, normals


def oblique_planes(n: int, tilt_deg: float = 60.0, origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` planes through ``origin`` whose normals are tilted ``tilt_deg`` from z, at azimuths ``(k + 1/2) 180/n``."""
    n = check_int("n", n, minimum=1)
    tilt = math.radians(float(tilt_deg))
    phi = (np.arange(n) + 0.5) * math.pi / n
    normals = np.stack((math.sin(tilt) * np.cos(phi), math.sin(tilt) * np.sin(phi),
                        np.full(n, math.cos(tilt))), axis=1)
    origins = np.tile(np.asarray(origin, dtype=np.float64), (n, 1))
    return origins, normals


def nearest_slice_extrusion(inside: Callable[[np.ndarray], np.ndarray], origins: Any, normals: Any,
                            points: Any) -> np.ndarray:
    """Label of each point's projection on the nearest plane (boolean ``(N,)``); planes of any orientation."""
    if not callable(inside):
        raise TypeError("inside must be callable points -> bool array")
    p = _points("points", points)
    o = _points("origins", origins)
    n, _, _ = plane_basis(normals)
    if n.shape[0] != o.shape[0]:
        raise ValueError(f"origins and normals must pair up; got {o.shape[0]} and {n.shape[0]}")
    signed = p @ n.T - np.sum(o * n, axis=1)[None]  # (N, P) signed distances to the planes
    k = np.argmin(np.abs(signed), axis=1)
    proj = p - signed[np.arange(p.shape[0]), k][:, None] * n[k]
    return np.asarray(inside(proj)).astype(bool)


def sdf_interpolation(inside: Callable[[np.ndarray], np.ndarray], origins: Any, normals: Any, points: Any, *,
                      bound: float = 1.0, spacing: float = 1.0 / 128) -> np.ndarray:
    """Shape-based interpolation between parallel slices (boolean ``(N,)``, True = inside).

    Each slice is rasterised with ``spacing`` over ``[-bound, bound]^2`` of its plane; its signed distance is
    ``EDT(outside) - EDT(inside)`` (scipy ``distance_transform_edt``, in plane units, half a cell subtracted on each
    side of the contour); a point's value is the linear interpolation along the common normal of the bilinearly
    sampled distances of its two bracketing slices.
    """
    from scipy import ndimage

    if not callable(inside):
        raise TypeError("inside must be callable points -> bool array")
    p = _points("points", points)
    o = _points("origins", origins)
    n, u, v = plane_basis(normals)
    if n.shape[0] != o.shape[0]:
        raise ValueError(f"origins and normals must pair up; got {o.shape[0]} and {n.shape[0]}")
    if np.any(np.abs(np.abs(n @ n[0]) - 1.0) > 1e-9):
        raise ValueError("sdf_interpolation needs parallel planes (the same normal up to sign)")
    bound = check_positive("bound", bound)
    spacing = check_positive("spacing", spacing)
    n0, u0, v0 = n[0], u[0], v[0]
    offsets = o @ n0
    order = np.argsort(offsets)
    offsets = offsets[order]
    if np.any(np.diff(offsets) <= 1e-12):
        raise ValueError("sdf_interpolation needs distinct planes")
    m = int(math.floor(2 * bound / spacing)) + 1
    ax = -bound + spacing * np.arange(m)
    aa, bb = np.meshgrid(ax, ax, indexing="ij")
    sdfs = np.empty((offsets.size, m, m))
    for i, t in enumerate(offsets):  # one raster per slice (a handful of slices)
        pts = t * n0 + aa[..., None] * u0 + bb[..., None] * v0
        occ = np.asarray(inside(pts.reshape(-1, 3))).astype(bool).reshape(m, m)
        d_out = ndimage.distance_transform_edt(~occ) * spacing
        d_in = ndimage.distance_transform_edt(occ) * spacing
        sdfs[i] = np.where(occ, -(d_in - 0.5 * spacing), d_out - 0.5 * spacing)
    s = offsets.size
    t = np.clip(p @ n0, offsets[0], offsets[-1])  # beyond the outermost slices: the nearest slice's distance
    if s == 1:
        lo = hi = np.zeros(p.shape[0], dtype=np.int64)
        w = np.zeros(p.shape[0])
    else:
        hi = np.clip(np.searchsorted(offsets, t, side="right"), 1, s - 1)
        lo = hi - 1
        w = (t - offsets[lo]) / (offsets[hi] - offsets[lo])
    fa = (p @ u0 + bound) / spacing
    fb = (p @ v0 + bound) / spacing

    def sample(idx: np.ndarray) -> np.ndarray:
        # bilinear on slice idx, clamped to the raster (outside it: the border's distance)
        return ndimage.map_coordinates(sdfs, np.stack((idx.astype(np.float64), fa, fb)), order=1, mode="nearest")

    d = (1 - w) * sample(lo) + w * sample(hi)
    return d < 0


def volume_iou(pred: Any, true: Any) -> float:
    """Intersection over union of two boolean arrays of equal shape (ValueError when both are empty)."""
    a = np.asarray(pred)
    b = np.asarray(true)
    if a.shape != b.shape:
        raise ValueError(f"pred and true must have the same shape; got {a.shape} and {b.shape}")
    if a.dtype != bool or b.dtype != bool:
        raise TypeError(f"pred and true must be boolean arrays; got {a.dtype} and {b.dtype}")
    union = np.logical_or(a, b).sum()
    if union == 0:
        raise ValueError("IoU is undefined: pred and true are both empty")
    return float(np.logical_and(a, b).sum() / union)


def face_geometry(verts: Any, faces: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids ``(F, 3)``, unit normals ``(F, 3)`` (right-hand rule) and areas ``(F,)`` of a triangle mesh.

    Degenerate (zero-area) triangles get a zero normal and zero area.
    """
    vt = _points("verts", verts)
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be an integer array (F, 3); got {f.dtype} {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= vt.shape[0]):
        raise ValueError(f"faces index vertices outside [0, {vt.shape[0]})")
    tri = vt[f]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    normals = np.where(norm[:, None] > 0, cross / np.maximum(norm, 1e-300)[:, None], 0.0)
    return tri.mean(axis=1), normals, 0.5 * norm


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles between rows of ``a`` and ``b`` in degrees (robust atan2 form)."""
    cross = np.linalg.norm(np.cross(a, b), axis=1)
    dot = np.sum(a * b, axis=1)
    return np.degrees(np.arctan2(cross, dot))


def ripple_score(verts: Any, faces: Any, radius: float) -> float:
    """Area-weighted mean angle (degrees) between face normals and their ``radius``-neighbourhood mean normal."""
    from scipy.spatial import cKDTree

    radius = check_positive("radius", radius)
    c, nrm, area = face_geometry(verts, faces)
    if area.sum() <= 0:
        raise ValueError("the mesh has no face of positive area")
    pairs = cKDTree(c).query_pairs(radius, output_type="ndarray")
    i = np.concatenate((pairs[:, 0], pairs[:, 1], np.arange(c.shape[0])))
    j = np.concatenate((pairs[:, 1], pairs[:, 0], np.arange(c.shape[0])))
    weighted = nrm * area[:, None]
    mean = np.zeros_like(nrm)
    np.add.at(mean, i, weighted[j])
    ang = _angle_deg(nrm, mean)
    return float(np.sum(area * ang) / area.sum())


def normal_error(verts: Any, faces: Any, sdf: Callable[[np.ndarray], np.ndarray], eps: float = 1e-5) -> float:
    """Area-weighted mean angle (degrees) between face normals and the analytic outward normal ``grad sdf``."""
    eps = check_positive("eps", eps)
    c, nrm, area = face_geometry(verts, faces)
    if area.sum() <= 0:
        raise ValueError("the mesh has no face of positive area")
    grad = np.stack([(sdf(c + eps * e) - sdf(c - eps * e)) / (2 * eps) for e in np.eye(3)], axis=1)
    return float(np.sum(area * _angle_deg(nrm, grad)) / area.sum())
