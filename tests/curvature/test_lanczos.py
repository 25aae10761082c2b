import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg
import torch
from torch import nn

from gradlab.curvature import HessianOperator
from gradlab.curvature.lanczos import extreme_eigenvalues, lanczos, power_iteration

from ._models import explicit_hessian, tiny_batch, tiny_mlp


def _sym(n, seed=0, spectrum=None):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = rng.standard_normal(n) if spectrum is None else np.asarray(spectrum, dtype=float)
    return torch.as_tensor((Q * lam) @ Q.T), np.sort(lam)


def test_full_krylov_reproduces_spectrum_of_dense_matrix():
    A, lam = _sym(40)
    res = lanczos(A, 40, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(res.ritz_values[0].numpy(), lam, atol=1e-9)
    T = res.tridiagonal()[0]
    np.testing.assert_allclose(np.linalg.eigvalsh(T.numpy()), scipy.linalg.eigvalsh(A.numpy()), atol=1e-9)


def test_basis_orthonormal_and_tridiagonalizes_with_reorthogonalization():
    A, _ = _sym(200, spectrum=np.concatenate([np.linspace(0, 1, 197), [5, 8, 20]]))
    res = lanczos(A, 60, return_vectors=True, generator=torch.Generator().manual_seed(1))
    Q = res.basis[:, :, 0]
    torch.testing.assert_close(Q.T @ Q, torch.eye(60, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(Q.T @ A @ Q, res.tridiagonal()[0], atol=1e-9, rtol=0)
    # both ends: outliers found, bottom near 0
    top, bottom = extreme_eigenvalues(A, 60, k=3, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(top.numpy(), [20, 8, 5], rtol=1e-8)
    assert abs(float(bottom[0])) < 1e-3
    # Ritz vectors are eigenvectors for converged values
    v = res.ritz_vectors[:, -1, 0]
    torch.testing.assert_close(A @ v, 20 * v, atol=1e-8, rtol=0)


def test_without_reorthogonalization_orthogonality_is_lost():
    A, _ = _sym(200, spectrum=np.concatenate([np.linspace(0, 1, 197), [5, 8, 20]]))
    res = lanczos(A, 80, reorthogonalize=False, return_vectors=True, generator=torch.Generator().manual_seed(1))
    Q = res.basis[:, :, 0]
    assert (Q.T @ Q - torch.eye(80, dtype=torch.float64)).abs().max() > 1e-3


def test_hessian_extremes_match_eigvalsh_and_eigsh():
    model, batch = tiny_mlp(), tiny_batch()
    CE = nn.CrossEntropyLoss()
    H = explicit_hessian(model, CE, batch)
    evals = torch.linalg.eigvalsh(H)
    op = HessianOperator(model, CE, batch)
    top, bottom = extreme_eigenvalues(op, op.size, k=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(top, evals.flip(0)[:2], atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(bottom, evals[:2], atol=1e-8, rtol=1e-8)
    ref = scipy.sparse.linalg.eigsh(op.to_scipy(), k=1, which="LA", tol=1e-12)[0][0]
    assert float(top[0]) == pytest.approx(ref, rel=1e-7)


def test_batched_runs_equal_separate_runs_and_breakdown_handled():
    A, lam = _sym(12, spectrum=[1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0])  # 4 distinct values
    V = torch.randn(12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = lanczos(A, 8, v0=V, generator=torch.Generator().manual_seed(5))
    for i in range(3):
        single = lanczos(A, 3, v0=V[:, i])
        torch.testing.assert_close(batched.alphas[i, :3], single.alphas[0], atol=1e-10, rtol=0)
    # after 4 steps the Krylov space is invariant: breakdown -> restart with beta = 0, values stay eigenvalues
    assert (batched.betas[:, 3].abs() < 1e-12).all()
    vals = batched.ritz_values
    assert torch.isin(vals.round(decimals=6), torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)).all()
    # quadrature weights of the restarted block are zero; they sum to one
    torch.testing.assert_close(batched.ritz_weights.sum(1), torch.ones(3, dtype=torch.float64))


def test_power_iteration_largest_magnitude_including_negative():
    A, _ = _sym(30, spectrum=np.concatenate([np.linspace(-1, 1, 29), [-6.0]]))
    r = power_iteration(A, 500, tol=1e-12, generator=torch.Generator().manual_seed(0))
    assert r.converged and r.eigenvalue == pytest.approx(-6.0, rel=1e-8)
    torch.testing.assert_close(A @ r.eigenvector, -6.0 * r.eigenvector, atol=1e-5, rtol=0)


def test_bad_inputs():
    A, _ = _sym(5)
    with pytest.raises(ValueError, match="square"):
        lanczos(torch.ones(3, 4))
    with pytest.raises(ValueError, match="v0"):
        lanczos(A, 3, v0=torch.ones(4))
    with pytest.raises(ValueError, match="non-zero"):
        lanczos(A, 3, v0=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        lanczos(A, 3, v0=torch.full((5,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="num_iters"):
        lanczos(A, 0)
    with pytest.raises(TypeError):
        lanczos([[1.0]])
    with pytest.raises(ValueError, match="k must"):
        extreme_eigenvalues(A, 3, k=4)
