"""Tests of the OReX neural field, its loss, the cross-section sampler, the baselines and the metrics.

References: finite differences and ``torch.autograd.gradcheck`` (hinge), closed forms (analytic gradients, plane
geometry, sphere area), hand-computed IoU, scipy's ``distance_transform_edt`` via an independent 1-D case, and
scikit-image's marching cubes on an analytic sphere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from gradlab.operators.cross_sections import (
    SphereUnion, Torus, face_geometry, nearest_slice_extrusion, normal_error, oblique_planes, parallel_planes,
    ripple_score, sdf_interpolation, volume_iou,
)
from gradlab.operators.neural_field import (
    CrossSectionSampler, LearnableFourierFeatures, OReXField, evaluate_grid, extract_mesh, fit_orex,
    gradient_hinge, grid_points_3d, orex_loss, plane_basis,
)

torch.set_num_threads(1)


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _field(dtype=torch.float64, **kw):
    args = dict(width=8, depth=2, n_iterations=3, hidden_state=4, n_freqs=2, dtype=dtype,
                generator=torch.Generator().manual_seed(0))
    args.update(kw)
    return OReXField(**args)


# ----------------------------------------------------------------------------------------------- network


def test_fourier_features_closed_form():
    enc = LearnableFourierFeatures(3, 2, dtype=torch.float64)
    x = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    out = enc(x)[0]
    expect = [0.1, -0.2, 0.3]
    expect += [math.cos(w * c) for c in (0.1, -0.2, 0.3) for w in (1.0, 2.0)]
    expect += [math.sin(w * c) for c in (0.1, -0.2, 0.3) for w in (1.0, 2.0)]
    assert enc.out_features == 15
    torch.testing.assert_close(out, torch.tensor(expect, dtype=torch.float64))
    assert enc.cos_freqs.requires_grad and enc.sin_freqs.requires_grad


def test_field_iterations_are_residual_refinements():
    f = _field()
    x = torch.rand(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    allk = f(x, all_iterations=True)
    assert allk.shape == (3, 7)
    torch.testing.assert_close(f(x), allk[-1])
    # iteration 1 by hand: l1 = l0 + g(gamma(x), l0, s0 + psi(0))[0]
    psi0 = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)  # sin(0), cos(0) for two frequencies
    inp = torch.cat((f.encoding(x), f.initial_logit.expand(7, 1), (f.initial_state + psi0).expand(7, 4)), dim=1)
    l1 = f.initial_logit + f.mlp(inp)[:, 0]
    torch.testing.assert_close(allk[0], l1)
    # the code of iteration k differs between iterations, the MLP is shared (same parameter count for any K)
    assert sum(p.numel() for p in _field(n_iterations=1).parameters()) == sum(p.numel() for p in f.parameters())


def test_field_initialisation_official():
    f = _field(width=16, depth=3)
    for m in f.mlp:
        if isinstance(m, torch.nn.Linear):
            bound = math.sqrt(6 / (m.in_features + m.out_features))
            assert m.weight.abs().max() <= bound and 0 <= m.bias.min() and m.bias.max() <= 1
    assert 0 <= float(f.initial_logit.detach()) <= 1
    g = _field(width=16, depth=3)
    for p, q in zip(f.parameters(), g.parameters()):
        assert torch.equal(p, q)  # same generator seed, same field


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_field_follows_dtype(dtype):
    f = _field(dtype=dtype)
    out = f(torch.zeros(4, 3, dtype=dtype))
    assert out.dtype == dtype and out.shape == (4,)
    with pytest.raises(TypeError, match="dtype"):
        f(torch.zeros(4, 3, dtype=torch.float64 if dtype == torch.float32 else torch.float32))


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_field_and_loss_on_device(device):
    f = _field(dtype=torch.float32, device=device)
    x = torch.rand(64, 3, device=device)
    y = (x.norm(dim=1) < 0.5).float()
    loss = orex_loss(f, x, y)
    loss.total.backward()
    assert loss.total.device.type == device and torch.isfinite(loss.total)


def test_field_bad_inputs():
    f = _field()
    with pytest.raises(ValueError, match="x must have shape"):
        f(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="dimensions"):
        f(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        f(torch.full((2, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        f(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="even"):
        OReXField(hidden_state=3)
    with pytest.raises(ValueError, match="n_iterations"):
        OReXField(n_iterations=0)
    with pytest.raises(TypeError, match="dtype"):
        OReXField(dtype=torch.int64)


# ----------------------------------------------------------------------------------------------- loss


def test_gradient_hinge_closed_form():
    # l(x) = c |x|^2: |grad| = 2 c |x|, hinge = mean(max(2 c |x| - alpha, 0))
    x = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.5, 0.0], [0.3, 0.4, 0.0]], dtype=torch.float64, requires_grad=True)
    c = 200.0
    val = gradient_hinge(c * (x**2).sum(1), x, alpha=100.0)
    expect = np.mean([max(2 * c * r - 100, 0) for r in (0.1, 0.5, 0.5)])
    assert float(val.detach()) == pytest.approx(expect, rel=1e-12)


def test_gradient_hinge_matches_finite_differences_of_field():
    f = _field(width=16)
    x0 = torch.tensor([[0.2, -0.1, 0.4], [-0.3, 0.5, 0.1]], dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        fd = torch.stack([(f(x0 + eps * e) - f(x0 - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=torch.float64)],
                         1)
    norms = fd.norm(dim=1)
    alpha = float(norms.min()) * 0.5  # both points above alpha: hinge = mean(norm) - alpha
    x = x0.clone().requires_grad_(True)
    val = gradient_hinge(f(x), x, alpha=alpha)
    assert float(val.detach()) == pytest.approx(float(norms.mean()) - alpha, rel=1e-7)
    assert float(gradient_hinge(f(x), x, alpha=float(norms.max()) + 1).detach()) == 0.0


class _Functional(torch.nn.Module):
    """``field`` evaluated with the parameters ``params`` (so gradcheck can differentiate with respect to them)."""

    def __init__(self, field, params):
        super().__init__()
        self.field, self.params = field, params
        self.names = [n for n, _ in field.named_parameters()]

    def forward(self, x, all_iterations=False):
        return functional_call(self.field, dict(zip(self.names, self.params)), (x,),
                               {"all_iterations": all_iterations})


def test_hinge_and_loss_gradcheck_float64():
    f = _field(width=6)
    params = tuple(p.detach().clone().requires_grad_(True) for p in f.parameters())
    x0 = torch.tensor([[0.2, -0.1, 0.4], [-0.3, 0.5, 0.1], [0.0, 0.1, -0.6]], dtype=torch.float64)
    xg = x0.clone().requires_grad_(True)
    norms = torch.autograd.grad(f(xg).sum(), xg)[0].norm(dim=1).sort().values
    alpha = float(0.5 * (norms[0] + norms[1]))  # two points above alpha, one below, none at the kink
    labels = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)

    def hinge_of_params(*ps):
        x = x0.clone().requires_grad_(True)
        return gradient_hinge(_Functional(f, ps)(x), x, alpha=alpha)

    def loss_of_params(*ps):
        return orex_loss(_Functional(f, ps), x0, labels, lam=0.3, alpha=alpha).total

    def hinge_of_points(x):
        return gradient_hinge(f(x), x, alpha=alpha)

    assert float(hinge_of_params(*params).detach()) > 0
    assert torch.autograd.gradcheck(hinge_of_params, params, eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(loss_of_params, params, eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(hinge_of_points, (x0.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_orex_loss_parts():
    f = _field()
    x = torch.rand(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    y = (x.norm(dim=1) < 0.6).double()
    loss = orex_loss(f, x, y, lam=0.5, alpha=0.0)
    allk = f(x, all_iterations=True)
    bce = np.mean([_f(torch.nn.functional.binary_cross_entropy_with_logits(allk[k], y)) for k in range(3)])
    assert _f(loss.bce) == pytest.approx(bce, rel=1e-12)
    xg = x.clone().requires_grad_(True)
    g = torch.autograd.grad(f(xg).sum(), xg)[0].norm(dim=1).mean()
    assert _f(loss.hinge) == pytest.approx(float(g), rel=1e-10)
    assert _f(loss.total) == pytest.approx(bce + 0.5 * float(g), rel=1e-10)
    no = orex_loss(f, x, y, lam=0.0)
    assert _f(no.hinge) == 0.0 and _f(no.total) == pytest.approx(bce, rel=1e-12)
    assert not x.requires_grad  # the caller's tensor is untouched


def test_orex_loss_bad_inputs():
    f = _field()
    x = torch.zeros(4, 3, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="labels must lie"):
        orex_loss(f, x, y + 2)
    with pytest.raises(ValueError, match="one value per point"):
        orex_loss(f, x, y[:3])
    with pytest.raises(ValueError, match="NaN"):
        orex_loss(f, x * float("nan"), y)
    with pytest.raises(ValueError, match="lam"):
        orex_loss(f, x, y, lam=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        orex_loss(f, x, y, alpha=float("nan"))
    with pytest.raises(TypeError, match="field"):
        orex_loss("net", x, y)
    with pytest.raises(ValueError, match="require grad"):
        gradient_hinge(f(x), x)


@settings(max_examples=25, deadline=None)
@given(lam=st.floats(0, 10), alpha=st.floats(0, 1e3), n=st.integers(1, 16),
       frac=st.floats(0, 1, allow_nan=False))
def test_orex_loss_property(lam, alpha, n, frac):
    f = _field()
    g = torch.Generator().manual_seed(n)
    x = torch.rand(n, 3, dtype=torch.float64, generator=g) * 2 - 1
    y = torch.full((n,), frac, dtype=torch.float64)
    loss = orex_loss(f, x, y, lam=lam, alpha=alpha)
    assert torch.isfinite(loss.total) and _f(loss.hinge) >= 0 and _f(loss.bce) >= 0
    assert _f(loss.total) == pytest.approx(_f(loss.bce) + lam * _f(loss.hinge), rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(bad=st.sampled_from([float("nan"), float("inf"), -1.0, "x", None]))
def test_orex_loss_rejects_bad_weights(bad):
    f = _field()
    x = torch.zeros(2, 3, dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.float64)
    with pytest.raises((TypeError, ValueError), match="lam"):
        orex_loss(f, x, y, lam=bad)


# ----------------------------------------------------------------------------------------------- sampler


def test_plane_basis_orthonormal():
    n, u, v = plane_basis(np.array([[0, 0, 2.0], [1, 1, 1], [0.3, -0.2, 0.9]]))
    for a, b in ((n, u), (n, v), (u, v)):
        np.testing.assert_allclose((a * b).sum(1), 0, atol=1e-12)
    for a in (n, u, v):
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-12)
    np.testing.assert_allclose(np.cross(u, v), n, atol=1e-12)
    np.testing.assert_allclose(u[0], [1, 0, 0]); np.testing.assert_allclose(v[0], [0, 1, 0])
    with pytest.raises(ValueError, match="non-zero"):
        plane_basis(np.zeros((1, 3)))


@pytest.mark.parametrize("oblique", [False, True])
def test_sampler_points_on_planes_and_labels(oblique):
    tor = Torus(R=0.5, r=0.25, axis="y")
    o, n = parallel_planes(3, -0.5, 0.5)
    if oblique:
        o, n = oblique_planes(2, tilt_deg=50.0)
    s = CrossSectionSampler(tor, o, n, spacing=1 / 32, n_uniform=300, n_hull=500, radius_exp=(3, 5),
                            samples_per_point=(1, 2))
    nn_, _, _ = plane_basis(n)
    # contour points lie on a plane and on the analytic surface
    dist = np.abs(np.sum((s.contour_points - o[s.contour_plane]) * nn_[s.contour_plane], axis=1))
    assert dist.max() < 1e-12
    assert np.abs(tor.sdf(s.contour_points)).max() < 1e-7
    assert s.contour_points.shape[0] > 50
    # in-plane normals: unit, in the plane, pointing inside
    np.testing.assert_allclose(np.linalg.norm(s.contour_normals, axis=1), 1, atol=1e-12)
    assert np.abs(np.sum(s.contour_normals * nn_[s.contour_plane], axis=1)).max() < 1e-12
    inward = tor(s.contour_points + 0.01 * s.contour_normals)
    assert inward.mean() > 0.95
    rng = np.random.default_rng(0)
    for level, r in ((0, 0.5**3), (1, 0.5**5)):
        p, y = s.near_contour_points(level, rng)
        np.testing.assert_array_equal(y, tor(p).astype(float))
        # every near point lies on one of the planes, within r of a contour point (+ jitter)
        plane_d = np.abs(p @ nn_.T - np.sum(o * nn_, axis=1)).min(axis=1)
        assert plane_d.max() < 1e-12
        from scipy.spatial import cKDTree
        d, _ = cKDTree(s.contour_points).query(p)
        assert d.max() <= math.hypot(r, s.spacing / 2) + 1e-9
        pts, lab = s.sample(level, 3)
        assert set(np.unique(lab)) <= {0.0, 0.5, 1.0}
    up, uy = s.plane_points(200, rng)
    np.testing.assert_array_equal(uy, tor(up).astype(float))
    assert np.all(np.abs(up) <= 1.0)


def test_sampler_hull_is_enlarged_and_outside():
    sph = SphereUnion(centers=((0.0, 0.0, 0.0),), radii=(0.5,))
    o, n = parallel_planes(4, -0.5, 0.5)
    s = CrossSectionSampler(sph, o, n, spacing=1 / 32, n_hull=400, hull_margin=0.1, radius_exp=(4,),
                            samples_per_point=(1,))
    h = s.hull_points(400, np.random.default_rng(0))
    assert h.shape == (400, 3)
    # outside the plain convex hull of the contours (beyond the outermost slices they may cut the true shape:
    # the slices say nothing there, as in the official sampler)
    from scipy.spatial import ConvexHull
    plain = ConvexHull(s.contour_points).equations
    assert ((h @ plain[:, :3].T + plain[:, 3]).max(axis=1) > 0).all()
    between = np.abs(h[:, 2]) < 0.37
    assert between.sum() > 50 and not sph(h[between]).any()  # between the slices they are outside the ball
    # on the hull surface: the max facet-plane value is ~0
    eq = s.hull.equations
    np.testing.assert_allclose((h @ eq[:, :3].T + eq[:, 3]).max(axis=1), 0, atol=1e-9)
    assert s.in_hull(s.contour_points).all()
    assert not s.in_hull(np.array([[0.0, 0.0, 0.9]]))[0]
    _, lab = s.sample(0, 0)
    assert (lab == 0).sum() >= 400


def test_sampler_bad_inputs():
    tor = Torus()
    o, n = parallel_planes(2, -0.5, 0.5)
    with pytest.raises(TypeError, match="inside"):
        CrossSectionSampler(None, o, n)
    with pytest.raises(ValueError, match="origins"):
        CrossSectionSampler(tor, o[:, :2], n)
    with pytest.raises(ValueError, match="pair up"):
        CrossSectionSampler(tor, o, n[:1], spacing=0.1)
    with pytest.raises(ValueError, match="equal length"):
        CrossSectionSampler(tor, o, n, spacing=0.1, radius_exp=(4, 5), samples_per_point=(2,))
    with pytest.raises(ValueError, match="spacing"):
        CrossSectionSampler(tor, o, n, spacing=0.0)
    with pytest.raises(ValueError, match="one value per point"):
        CrossSectionSampler(lambda p: np.zeros(3, bool), o, n, spacing=0.1)
    s = CrossSectionSampler(tor, o, n, spacing=0.1, radius_exp=(4,), samples_per_point=(1,))
    with pytest.raises(ValueError, match="level"):
        s.sample(1)


@settings(max_examples=15, deadline=None)
@given(nx=st.floats(-1, 1), ny=st.floats(-1, 1), nz=st.floats(0.2, 1), off=st.floats(-0.3, 0.3))
def test_sampler_property_any_orientation(nx, ny, nz, off):
    sph = SphereUnion(centers=((0.0, 0.0, 0.0),), radii=(0.6,))
    normal = np.array([[nx, ny, nz]])
    unit = normal / np.linalg.norm(normal)
    s = CrossSectionSampler(sph, unit * off, normal, spacing=1 / 16, n_uniform=50, n_hull=0, radius_exp=(4,),
                            samples_per_point=(1,))
    assert s.hull is None  # one plane: no 3-D hull, nothing is clipped
    p, y = s.sample(0, 0)
    assert np.all(np.isfinite(p)) and p.shape[0] == y.shape[0]
    assert np.abs((p - unit * off) @ unit[0]).max() < 1e-9  # every point on the plane
    near = y != 0.5
    np.testing.assert_array_equal(y[near], sph(p[near]).astype(float))
    # the contour of a plane at distance |off| is a circle of radius sqrt(0.36 - off^2)
    rad = np.linalg.norm(s.contour_points - unit * off, axis=1)
    np.testing.assert_allclose(rad, math.sqrt(0.36 - off**2), atol=1e-7)


# ----------------------------------------------------------------------------------------------- training


def test_fit_orex_learns_a_sphere_from_slices():
    sph = SphereUnion(centers=((0.0, 0.0, 0.0),), radii=(0.6,))
    o, n = parallel_planes(6, -0.6, 0.6)
    s = CrossSectionSampler(sph, o, n, spacing=1 / 32, n_uniform=256, n_hull=512, radius_exp=(3, 4),
                            samples_per_point=(1, 1))
    f = OReXField(width=32, depth=2, n_iterations=2, generator=torch.Generator().manual_seed(0))
    hist = fit_orex(f, s, (75, 75), batch_size=512, seed=0)
    assert len(hist["total"]) == 150 and np.mean(hist["bce"][-10:]) < 0.5 * np.mean(hist["bce"][:10])
    p, y = s.plane_points(300, np.random.default_rng(1))
    with torch.no_grad():
        acc = ((f(torch.from_numpy(p).float()) > 0).numpy() == (y > 0.5)).mean()
    assert acc > 0.95  # fits the slices
    vol = evaluate_grid(f, 24)
    assert volume_iou(vol.reshape(-1) > 0, sph(grid_points_3d(24))) > 0.75  # and the volume between them
    with pytest.raises(ValueError, match="steps_per_level"):
        fit_orex(f, s, (1, 1, 1))
    with pytest.raises(TypeError, match="sampler"):
        fit_orex(f, "s", (1,))


# ----------------------------------------------------------------------------------------------- baselines


def test_nearest_slice_extrusion_by_hand():
    ball = SphereUnion(centers=((0.0, 0.0, 0.0),), radii=(0.5,))
    o, n = parallel_planes(2, -0.5, 0.5)  # z = -0.25, 0.25: discs of radius sqrt(0.25 - 0.0625) = 0.433
    p = np.array([[0.42, 0, 0.0], [0.44, 0, 0.1], [0.0, 0, 0.49], [0.0, 0, -0.9], [0.3, 0.3, 0.2]])
    got = nearest_slice_extrusion(ball, o, n, p)
    np.testing.assert_array_equal(got, [True, False, True, True, True])


def test_sdf_interpolation_linear_between_discs():
    # cone-like stack: discs of radius 0.2 at z=-0.5 and 0.6 at z=0.5 (a frustum with straight sides)
    def inside(p):
        return np.hypot(p[:, 0], p[:, 1]) < 0.4 + 0.4 * p[:, 2]

    o, n = parallel_planes(2, -1.0, 1.0)  # z = -0.5, 0.5
    r = np.linspace(0.0, 0.7, 71)
    pts = np.stack((r, np.zeros_like(r), np.zeros_like(r)), 1)  # at z = 0 the interpolated radius is 0.4
    got = sdf_interpolation(inside, o, n, pts, spacing=1 / 256)
    assert np.all(got[r < 0.39]) and not np.any(got[r > 0.41])
    with pytest.raises(ValueError, match="parallel"):
        sdf_interpolation(inside, *oblique_planes(2), pts)


def test_volume_iou_hand_computed():
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 1, 0, 1], bool)
    assert volume_iou(a, b) == pytest.approx(2 / 4)
    assert volume_iou(a, a) == 1.0
    with pytest.raises(ValueError, match="undefined"):
        volume_iou(np.zeros(3, bool), np.zeros(3, bool))
    with pytest.raises(ValueError, match="same shape"):
        volume_iou(a, b[:4])
    with pytest.raises(TypeError, match="boolean"):
        volume_iou(a.astype(int), b)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_volume_iou_property(pairs):
    a = np.array([p[0] for p in pairs], bool)
    b = np.array([p[1] for p in pairs], bool)
    if not (a | b).any():
        with pytest.raises(ValueError):
            volume_iou(a, b)
        return
    v = volume_iou(a, b)
    assert 0 <= v <= 1 and v == volume_iou(b, a)
    assert v == pytest.approx(sum(x and y for x, y in pairs) / sum(x or y for x, y in pairs))


def test_shapes_closed_form():
    tor = Torus(R=0.5, r=0.25, axis="y")
    p = np.array([[0.5, 0, 0], [0.0, 0, 0], [0, 0, 0.75], [0, 0.25, 0.5]])
    np.testing.assert_allclose(tor.sdf(p), [-0.25, 0.25, 0.0, 0.0], atol=1e-12)
    mid = (np.arange(64) + 0.5) / 32 - 1  # cell midpoints of a 64^3 partition of [-1, 1]^3
    pts = np.stack(np.meshgrid(mid, mid, mid, indexing="ij"), -1).reshape(-1, 3)
    assert tor(pts).mean() * 8 == pytest.approx(tor.volume, rel=0.01)  # 2 pi^2 R r^2
    with pytest.raises(ValueError, match="r must be smaller"):
        Torus(R=0.2, r=0.3)
    with pytest.raises(ValueError, match="axis"):
        Torus(axis="w")
    su = SphereUnion()
    assert su(np.array([[-0.35, 0, -0.15], [0.4, 0, 0.2]])).all()
    with pytest.raises(ValueError, match="one radius"):
        SphereUnion(centers=((0, 0, 0),), radii=(0.1, 0.2))


# ----------------------------------------------------------------------------------------------- meshes


def test_extract_mesh_sphere_matches_analytic():
    pts = grid_points_3d(48)
    c = np.array([0.1, -0.05, 0.0])
    vol = (0.6 - np.linalg.norm(pts - c, axis=1)).reshape(48, 48, 48)
    verts, faces = extract_mesh(vol)
    assert np.abs(np.linalg.norm(verts - c, axis=1) - 0.6).max() < 2e-3  # MC on an SDF is nearly exact
    cen, nrm, area = face_geometry(verts, faces)
    assert area.sum() == pytest.approx(4 * math.pi * 0.36, rel=0.01)
    assert (np.sum(nrm * (cen - c), axis=1) > 0).all()  # outward normals
    assert normal_error(verts, faces, lambda q: np.linalg.norm(q - c, axis=1) - 0.6) < 2.0
    vt, ft = extract_mesh(torch.from_numpy(vol))
    np.testing.assert_allclose(vt, verts)


def test_extract_mesh_bad_inputs():
    with pytest.raises(ValueError, match="does not cross"):
        extract_mesh(np.ones((4, 4, 4)))
    with pytest.raises(ValueError, match="3-D grid"):
        extract_mesh(np.ones((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        extract_mesh(np.full((4, 4, 4), np.nan))
    with pytest.raises(TypeError, match="numpy array"):
        extract_mesh([[[1.0]]])


def test_ripple_score_flat_and_terraced():
    # a plane z = 0.3x: a smooth SDF gives ~0 ripple; the binary version (terraces) gives a large one
    pts = grid_points_3d(32)
    d = 0.3 * pts[:, 0] - pts[:, 2] + 0.01
    h = 2 / 31
    smooth = ripple_score(*extract_mesh(d.reshape(32, 32, 32)), radius=2 * h)
    binary = ripple_score(*extract_mesh((d > 0).reshape(32, 32, 32).astype(float) - 0.5), radius=2 * h)
    assert smooth < 0.5 and binary > 5.0
    # hand case: two faces, 90 degrees apart, equal areas, neighbours of each other: 45 degrees each
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 3, 1]])
    assert ripple_score(verts, faces, radius=10.0) == pytest.approx(45.0)
    assert ripple_score(verts, faces, radius=1e-3) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="faces"):
        ripple_score(verts, np.array([[0, 1, 7]]), radius=1.0)
    with pytest.raises(ValueError, match="radius"):
        ripple_score(verts, faces, radius=0.0)
