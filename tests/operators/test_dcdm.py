"""DCDM network, loss, Ritz data and grid Poisson problems against closed forms, dense algebra and loop references."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import cg, spsolve

from gradlab.operators.dcdm import (
    DCDMNet,
    GridLaplacian,
    dcdm_loss,
    dirichlet_ritz_rhs,
    disk_obstacle,
    net_direction,
    poisson_matrix,
    ritz_rhs,
    train_dcdm,
)
from gradlab.operators.krylov import dcdm

torch.set_num_threads(1)


def loop_laplacian(solid):
    """Reference: Laplacian on fluid cells with Dirichlet box boundary and zero-flux solid walls, by explicit loops."""
    shape = solid.shape
    cells = [c for c in np.ndindex(*shape) if not solid[c]]
    num = {c: i for i, c in enumerate(cells)}
    A = np.zeros((len(cells), len(cells)))
    for c, i in num.items():
        for d in range(len(shape)):
            for s in (-1, 1):
                nb = list(c)
                nb[d] += s
                nb = tuple(nb)
                if not (0 <= nb[d] < shape[d]):
                    A[i, i] += 1.0  # Dirichlet neighbour outside the box
                elif not solid[nb]:
                    A[i, i] += 1.0
                    A[i, num[nb]] -= 1.0
    return A


# --------------------------------------------------------------------------------------------------------------- grids


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 5)])
def test_poisson_matrix_spectrum_closed_form(shape):
    A = poisson_matrix(shape).toarray()
    lam = sum(np.meshgrid(*[2 - 2 * np.cos(np.pi * np.arange(1, s + 1) / (s + 1)) for s in shape], indexing="ij"))
    np.testing.assert_allclose(np.linalg.eigvalsh(A), np.sort(lam.ravel()), atol=1e-12)
    np.testing.assert_array_equal(A, loop_laplacian(np.zeros(shape, dtype=bool)))


@pytest.mark.parametrize("shape", [(12, 9), (6, 5, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_laplacian_matrix_and_convolution_agree(shape, dtype):
    solid = disk_obstacle(shape, [0.5] * len(shape), 0.25)
    assert solid.any() and not solid.all()
    lap = GridLaplacian(shape, solid)
    np.testing.assert_array_equal(lap.matrix.toarray(), loop_laplacian(solid))
    v = np.random.default_rng(0).standard_normal((3, lap.n))
    u = lap.to_grid(torch.as_tensor(v, dtype=dtype))
    u_dirty = u + 5.0 * torch.as_tensor(solid, dtype=dtype)  # values on solid cells must be ignored
    Au = lap.apply(u_dirty)
    assert Au.dtype == dtype
    assert torch.all(Au.reshape(3, -1)[:, torch.as_tensor(solid.ravel())] == 0)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(lap.from_grid(Au).double().numpy(), (lap.matrix @ v.T).T, atol=tol)
    torch.testing.assert_close(lap.from_grid(lap.to_grid(torch.as_tensor(v))), torch.as_tensor(v))


def test_grid_laplacian_without_obstacle_is_poisson_matrix_and_spd():
    lap = GridLaplacian((10, 8))
    assert abs(lap.matrix - poisson_matrix((10, 8))).max() == 0
    lap_o = GridLaplacian((20, 20), disk_obstacle((20, 20), (0.5, 0.5), 0.3))
    assert np.linalg.eigvalsh(lap_o.matrix.toarray()).min() > 0


def test_grid_laplacian_bad_input():
    with pytest.raises(TypeError, match="shape"):
        GridLaplacian(8)
    with pytest.raises(ValueError, match="2 or 3"):
        GridLaplacian((8,))
    with pytest.raises(ValueError, match=r"shape\[1\]"):
        GridLaplacian((8, 0))
    with pytest.raises(ValueError, match="solid must have shape"):
        GridLaplacian((4, 4), np.zeros((4, 5), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        GridLaplacian((4, 4), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="at least one fluid"):
        GridLaplacian((2, 2), np.ones((2, 2), dtype=bool))
    ring = np.zeros((7, 7), dtype=bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False  # fluid pocket walled in: Neumann-only, singular
    with pytest.raises(ValueError, match="singular"):
        GridLaplacian((7, 7), ring)
    lap = GridLaplacian((4, 4))
    with pytest.raises(ValueError, match="u must have shape"):
        lap.apply(torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="v must have shape"):
        lap.to_grid(np.zeros(15))
    with pytest.raises(ValueError, match="radius"):
        disk_obstacle((4, 4), (0.5, 0.5), -1.0)


@settings(max_examples=40, deadline=None)
@given(n1=st.integers(1, 9), n2=st.integers(1, 9), seed=st.integers(0, 10_000), p=st.floats(0.0, 0.5))
def test_property_random_obstacles_matrix_equals_loops_or_clear_error(n1, n2, seed, p):
    solid = np.random.default_rng(seed).random((n1, n2)) < p
    ref = loop_laplacian(solid) if not solid.all() else None
    try:
        lap = GridLaplacian((n1, n2), solid)
    except ValueError as err:
        assert "fluid" in str(err)
        assert ref is None or np.linalg.eigvalsh(ref).min() < 1e-10  # raised only for singular systems
        return
    np.testing.assert_array_equal(lap.matrix.toarray(), ref)
    assert np.linalg.eigvalsh(ref).min() > 1e-12
    v = np.random.default_rng(seed + 1).standard_normal(lap.n)
    np.testing.assert_allclose(lap.from_grid(lap.apply(lap.to_grid(torch.as_tensor(v))))[0].numpy(), ref @ v,
                               atol=1e-12)


# --------------------------------------------------------------------------------------------------------------- loss


def test_dcdm_loss_hand_computed_and_zero_for_exact_inverse():
    lap = GridLaplacian((6, 5))
    rng = np.random.default_rng(1)
    b = torch.as_tensor(rng.standard_normal((2, 1, 6, 5)))
    q = torch.as_tensor(rng.standard_normal((2, 1, 6, 5)))
    ref = 0.0
    A = lap.matrix.toarray()
    for i in range(2):
        qi, bi = q[i].reshape(-1).numpy(), b[i].reshape(-1).numpy()
        a = qi @ bi / (qi @ A @ qi)
        ref += np.sum((bi - a * A @ qi) ** 2) / 2
    torch.testing.assert_close(dcdm_loss(q, b, lap.apply), torch.tensor(ref, dtype=torch.float64))
    exact = torch.as_tensor(np.stack([spsolve(lap.matrix.tocsc(), bi.reshape(-1).numpy()) for bi in b]))
    assert float(dcdm_loss(exact.reshape(2, 1, 6, 5), b, lap.apply)) < 1e-24


@pytest.mark.parametrize("c", [-3.0, 0.5, 1e3, -1e-3])
def test_dcdm_loss_scale_invariant(c):
    lap = GridLaplacian((8, 8))
    g = torch.Generator().manual_seed(0)
    b, q = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(4, 1, 8, 8, generator=g,
                                                                                dtype=torch.float64)
    torch.testing.assert_close(dcdm_loss(c * q, b, lap.apply), dcdm_loss(q, b, lap.apply), rtol=1e-12, atol=0)


def test_dcdm_loss_bad_input():
    lap = GridLaplacian((4, 4))
    z = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        dcdm_loss(z, torch.zeros(2, 1, 4, 5), lap.apply)
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        dcdm_loss(np.zeros((2, 1, 4, 4)), z, lap.apply)
    with pytest.raises(TypeError, match="matvec"):
        dcdm_loss(z, z, None)
    with pytest.raises(ValueError, match="matvec must return"):
        dcdm_loss(z, z, lambda v: v[:, :, :2])


@settings(max_examples=50, deadline=None)
@given(batch=st.integers(1, 4), n=st.integers(2, 7), c=st.floats(-1e4, 1e4).filter(lambda v: abs(v) > 1e-3),
       seed=st.integers(0, 10_000))
def test_property_loss_scale_invariant_and_bounded(batch, n, c, seed):
    lap = GridLaplacian((n, n))
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(batch, 1, n, n, generator=g, dtype=torch.float64)
    q = torch.randn(batch, 1, n, n, generator=g, dtype=torch.float64)
    base = dcdm_loss(q, b, lap.apply)
    torch.testing.assert_close(dcdm_loss(c * q, b, lap.apply), base, rtol=1e-9, atol=1e-12)
    assert torch.isfinite(base) and float(base) >= 0


# --------------------------------------------------------------------------------------------------------------- RHS


def _log_amplitude_gap(samples, vectors):
    """Mean over samples of mean log|coefficient| on the lower half of ``vectors`` (rows, ascending eigenvalue)
    minus that on the upper half: log(9) in expectation whatever the per-sample normalisation."""
    logc = np.log(np.abs(samples @ vectors.T))
    half = vectors.shape[0] // 2
    return float((logc[:, :half].mean(1) - logc[:, half:].mean(1)).mean())


def test_dirichlet_ritz_rhs_weights_and_norm():
    shape = (6, 5)
    b = dirichlet_ritz_rhs(shape, 4000, generator=torch.Generator().manual_seed(0))
    assert b.shape == (4000, 6, 5) and b.dtype == torch.float64
    torch.testing.assert_close(b.flatten(1).norm(dim=1), torch.ones(4000, dtype=torch.float64))
    lam, V = np.linalg.eigh(poisson_matrix(shape).toarray())
    assert lam[15] - lam[14] > 1e-6  # the two halves are not mixed by a degenerate eigenvalue
    gap = _log_amplitude_gap(b.flatten(1).numpy(), V.T)
    assert abs(gap - np.log(9.0)) < 0.1  # factor 9 in amplitude on the lower half


def test_ritz_rhs_full_krylov_matches_dirichlet_case_statistics():
    A = poisson_matrix((5, 4))
    b = ritz_rhs(A, 4000, 20, generator=torch.Generator().manual_seed(1))
    assert b.shape == (4000, 20)
    torch.testing.assert_close(b.norm(dim=1), torch.ones(4000, dtype=torch.float64))
    lam, V = np.linalg.eigh(A.toarray())
    assert lam[10] - lam[9] > 1e-6
    gap = _log_amplitude_gap(b.numpy(), V.T)
    assert abs(gap - np.log(9.0)) < 0.1
    b2 = ritz_rhs(A, 4000, 20, generator=torch.Generator().manual_seed(1), low_factor=1.0)
    assert abs(_log_amplitude_gap(b2.numpy(), V.T)) < 0.1


def test_ritz_rhs_drops_null_space_and_lives_in_krylov_space():
    n = 30  # path-graph (Neumann) Laplacian: constant null vector
    L = sp.diags_array([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], offsets=[-1, 0, 1]).toarray()
    L[0, 0] = L[-1, -1] = 1.0
    b = ritz_rhs(L, 200, n, generator=torch.Generator().manual_seed(2)).numpy()
    np.testing.assert_allclose(b @ np.ones(n), 0, atol=1e-8)
    # with m < P the samples lie in the Krylov space K_m(A, A xi)
    A = poisson_matrix((8, 8)).toarray()
    g = torch.Generator().manual_seed(3)
    m = 10
    b = ritz_rhs(A, 50, m, generator=g).numpy()
    xi = torch.randn(64, generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    K = np.stack([np.linalg.matrix_power(A, j + 1) @ xi for j in range(m)], axis=1)
    Q, _ = np.linalg.qr(K)
    np.testing.assert_allclose(b - (b @ Q) @ Q.T, 0, atol=1e-6)


def test_rhs_bad_input():
    with pytest.raises(ValueError, match="m must be >= 1"):
        ritz_rhs(np.eye(3), 2, 0)
    with pytest.raises(ValueError, match="square"):
        ritz_rhs(np.ones((3, 2)), 2, 2)
    with pytest.raises(ValueError, match="zero operator"):
        ritz_rhs(np.zeros((3, 3)), 2, 2)
    with pytest.raises(ValueError, match="low_factor"):
        dirichlet_ritz_rhs((4, 4), 2, low_factor=0.0)
    with pytest.raises(TypeError, match="n must be an int"):
        dirichlet_ritz_rhs((4, 4), 2.0)


# --------------------------------------------------------------------------------------------------------------- net


@pytest.mark.parametrize("dim,size", [(2, (32, 32)), (2, (17, 23)), (3, (9, 10, 11)), (3, (8, 8, 8))])
def test_dcdmnet_shapes_any_size(dim, size):
    torch.manual_seed(0)
    net = DCDMNet(dim=dim, channels=4, levels=3)
    x = torch.randn(2, 1, *size)
    y = net(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_dcdmnet_follows_dtype_and_is_convolutional():
    torch.manual_seed(0)
    net = DCDMNet(levels=2, channels=4).double()
    x = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    x[0, 0, 32, 32] = 1.0
    y = net(x)
    assert y.dtype == torch.float64
    # translation by the pooling stride (2^(levels-1) = 2) commutes with the net away from the boundary
    shifted = net(torch.roll(x, 2, dims=3))
    torch.testing.assert_close(shifted[..., 22:42, 22:42], torch.roll(y, 2, dims=3)[..., 22:42, 22:42])
    assert not torch.allclose(shifted, torch.roll(y, 1, dims=3))


def test_dcdmnet_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        DCDMNet(dim=1)
    with pytest.raises(ValueError, match="kernel_size"):
        DCDMNet(kernel_size=2)
    with pytest.raises(ValueError, match="levels"):
        DCDMNet(levels=0)
    net = DCDMNet(levels=2, channels=2)
    with pytest.raises(ValueError, match="1 channel"):
        net(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="dimensions"):
        net(torch.zeros(1, 1, 8, 8, 8))


# --------------------------------------------------------------------------------------------------------------- use


def test_training_lowers_loss_and_net_direction_solves_monotonically():
    torch.manual_seed(0)
    lap = GridLaplacian((16, 16))
    net = DCDMNet(levels=3)
    g = torch.Generator().manual_seed(0)
    rhs = dirichlet_ritz_rhs((16, 16), 256, generator=g).float()
    losses = train_dcdm(net, lap, rhs, steps=150, batch_size=8, generator=g)
    assert len(losses) == 150 and np.mean(losses[-20:]) < 0.3 * np.mean(losses[:5])
    A = lap.matrix
    b = np.random.default_rng(0).standard_normal(lap.n)
    direction = net_direction(net, lap)
    q = direction(b / np.linalg.norm(b))
    assert q.shape == (lap.n,) and q.dtype == np.float64
    xs = spsolve(A.tocsc(), b)
    xs_list = []
    x, info = dcdm(A, b, direction=direction, rtol=1e-6, maxiter=300, callback=lambda xk: xs_list.append(xk.copy()))
    errs = [np.sqrt(xs @ A @ xs)] + [np.sqrt((xs - xk) @ A @ (xs - xk)) for xk in xs_list]
    assert info == 0
    assert np.all(np.diff(errs) <= 1e-12 * errs[0])
    its_cg = [0]
    cg(A, b, rtol=1e-6, callback=lambda xk: its_cg.__setitem__(0, its_cg[0] + 1))
    assert len(xs_list) < its_cg[0]  # a trained direction beats the residual direction


def test_net_direction_on_obstacle_grid_and_float64_net():
    solid = disk_obstacle((10, 10), (0.5, 0.5), 0.25)
    lap = GridLaplacian((10, 10), solid)
    torch.manual_seed(0)
    net = DCDMNet(levels=2, channels=4)
    r = np.random.default_rng(0).standard_normal(lap.n)
    q = net_direction(net, lap)(r)
    with torch.no_grad():
        ref = net(lap.to_grid(torch.as_tensor(r)).float())
    np.testing.assert_allclose(q, lap.from_grid(ref)[0].double().numpy())
    q64 = net_direction(net.double(), lap)(r)
    np.testing.assert_allclose(q64, q, rtol=1e-4, atol=1e-5)


def test_train_and_direction_bad_input():
    lap = GridLaplacian((6, 6))
    net = DCDMNet(levels=2, channels=2)
    with pytest.raises(ValueError, match="rhs must have shape"):
        train_dcdm(net, lap, torch.zeros(4, 5, 5), steps=1)
    bad = torch.ones(4, 6, 6)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="rhs contains NaN"):
        train_dcdm(net, lap, bad, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_dcdm(net, lap, torch.ones(4, 36), steps=0)
    with pytest.raises(TypeError, match="laplacian"):
        train_dcdm(net, poisson_matrix((6, 6)), torch.ones(4, 36), steps=1)
    with pytest.raises(TypeError, match="net"):
        net_direction(lambda r: r, lap)


@settings(max_examples=25, deadline=None)
@given(P=st.integers(1, 15), n=st.integers(1, 5), m=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_property_ritz_rhs_unit_norm_in_range(P, n, m, seed):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((P, P))
    A = B @ B.T + 0.1 * np.eye(P)
    b = ritz_rhs(A, n, m, generator=torch.Generator().manual_seed(seed))
    assert b.shape == (n, P) and torch.isfinite(b).all()
    torch.testing.assert_close(b.norm(dim=1), torch.ones(n, dtype=torch.float64))


@settings(max_examples=25, deadline=None)
@given(shape=st.one_of(st.tuples(st.integers(1, 12), st.integers(1, 12)),
                       st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6))),
       n=st.integers(1, 4), levels=st.integers(1, 4))
def test_property_rhs_and_net_any_grid(shape, n, levels):
    b = dirichlet_ritz_rhs(shape, n, generator=torch.Generator().manual_seed(0))
    assert b.shape == (n, *shape) and torch.isfinite(b).all()
    torch.testing.assert_close(b.flatten(1).norm(dim=1), torch.ones(n, dtype=torch.float64))
    torch.manual_seed(0)
    net = DCDMNet(dim=len(shape), channels=2, levels=levels).double()
    y = net(b[:, None])
    assert y.shape == (n, 1, *shape) and torch.isfinite(y).all()


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(st.integers(), st.text(max_size=3), st.tuples(st.integers(-3, 0), st.integers(1, 3)),
                     st.lists(st.integers(1, 4), min_size=4, max_size=5)))
def test_property_bad_shapes_named(bad):
    with pytest.raises((TypeError, ValueError), match="shape"):
        GridLaplacian(bad)
    with pytest.raises((TypeError, ValueError), match="shape"):
        dirichlet_ritz_rhs(bad, 1)
