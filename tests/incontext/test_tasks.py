import math

import pytest
import torch

from gradlab.incontext.tasks import (
    AutoregressiveTask, LinearRegressionTask, PromptBatch, TokenSelectionTask, ill_conditioned_covariance,
    ill_conditioned_factor,
)


def test_regression_shapes_and_labels():
    task = LinearRegressionTask(4, seed=3)
    b = task.sample(7, 5)
    assert isinstance(b, PromptBatch)
    assert b.xs.shape == (7, 5, 4) and b.ys.shape == (7, 5) and b.xq.shape == (7, 4) and b.yq.shape == (7,)
    torch.testing.assert_close(b.ys, torch.einsum("bnd,bd->bn", b.xs, b.w), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.yq, (b.xq * b.w).sum(-1), atol=1e-5, rtol=1e-5)
    x, y = b.all_points()
    assert x.shape == (7, 6, 4) and y.shape == (7, 6)


def test_seeding_reproducible_and_independent():
    a = LinearRegressionTask(3, seed=1).sample(4, 6)
    b = LinearRegressionTask(3, seed=1).sample(4, 6)
    c = LinearRegressionTask(3, seed=2).sample(4, 6)
    assert torch.equal(a.xs, b.xs) and not torch.equal(a.xs, c.xs)


def test_covariance_and_noise_statistics():
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    task = LinearRegressionTask(2, covariance=cov, noise_std=0.5, seed=0, dtype=torch.float64)
    b = task.sample(20000, 2)
    x = b.xs.reshape(-1, 2)
    torch.testing.assert_close(x.T @ x / x.shape[0], cov, atol=0.05, rtol=0.05)
    resid = b.ys - torch.einsum("bnd,bd->bn", b.xs, b.w)
    assert abs(float(resid.std()) - 0.5) < 0.02


def test_uniform_inputs_range():
    b = LinearRegressionTask(3, x_dist="uniform", input_range=1.0, seed=0).sample(100, 10)
    assert float(b.xs.abs().max()) <= 0.5
    assert float(b.xs.abs().max()) > 0.45


def test_shifts():
    task = LinearRegressionTask(3, seed=0, dtype=torch.float64)
    ts = task.shifted(w_mean=2.0, seed=5)
    w = ts.sample(20000, 1).w
    torch.testing.assert_close(w.mean(0), torch.full((3,), 2.0, dtype=torch.float64), atol=0.05, rtol=0)
    cs = task.shifted(covariance=4 * torch.eye(3, dtype=torch.float64))
    x = cs.sample(20000, 1).xs
    assert abs(float(x.var()) - 4.0) < 0.2


def test_ill_conditioned():
    g = torch.Generator().manual_seed(0)
    a = ill_conditioned_factor(6, 10.0, g, torch.float64)
    torch.testing.assert_close(a, a.T)
    assert abs(float((torch.linalg.eigvalsh(a) ** 2).sum()) - 6) < 1e-8
    cov = ill_conditioned_covariance(6, 10.0, torch.Generator().manual_seed(0), torch.float64)
    ev = torch.linalg.eigvalsh(cov)
    assert abs(float(ev.max() / ev.min()) - 100.0) < 1e-6


def test_regression_bad_args():
    with pytest.raises(ValueError, match="covariance"):
        LinearRegressionTask(3, covariance=torch.eye(2))
    with pytest.raises(ValueError, match="x_dist"):
        LinearRegressionTask(3, x_dist="laplace")
    with pytest.raises(TypeError, match="batch"):
        LinearRegressionTask(3).sample(2.0, 3)
    with pytest.raises(ValueError, match="noise_std"):
        LinearRegressionTask(3, noise_std=-1.0)
    with pytest.raises(ValueError, match="semi-definite"):
        LinearRegressionTask(2, covariance=torch.tensor([[1.0, 0.0], [0.0, -1.0]]))


def test_autoregressive_dynamics():
    task = AutoregressiveTask(4, x1="gaussian", seed=0, dtype=torch.complex128)
    b = task.sample(3, 10)
    assert b.xs.shape == (3, 10, 4) and b.xs.is_complex()
    torch.testing.assert_close(b.xs[:, 1:], b.w_diag[:, None] * b.xs[:, :-1])
    torch.testing.assert_close(b.w_diag.abs(), torch.ones(3, 4, dtype=torch.float64))


def test_autoregressive_sparse_and_ones():
    b = AutoregressiveTask(5, x1="sparse", sigma=2.0, seed=1).sample(50, 3)
    nz = (b.xs[:, 0].abs() > 0).sum(-1)
    assert bool((nz == 1).all())
    assert torch.allclose(b.xs[:, 0].abs().sum(-1), torch.full((50,), 2.0))
    o = AutoregressiveTask(3, x1="ones", seed=1).sample(2, 2)
    assert torch.allclose(o.xs[:, 0].real, torch.ones(2, 3))
    with pytest.raises(ValueError, match="x1"):
        AutoregressiveTask(3, x1="uniform")


def test_token_selection():
    task = TokenSelectionTask(6, self_attention=True, seed=0)
    b = task.sample(4, 5)
    assert b.X.shape == (4, 5, 6) and b.z.shape == (4, 6) and b.y.shape == (4,)
    torch.testing.assert_close(b.X.norm(dim=-1), torch.ones(4, 5, dtype=torch.float64))
    torch.testing.assert_close(b.z, b.X[:, 0])
    assert set(b.y.tolist()) <= {-1.0, 1.0}
    assert math.isclose(float(b.v.norm()), 1.0)
    torch.testing.assert_close(b.token_scores(), b.y[:, None] * (b.X @ b.v))
    with pytest.raises(ValueError, match="n_context"):
        task.sample(2, 1)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, "float32"])
def test_tasks_refuse_non_float_dtypes(dtype):
    from gradlab.incontext.tasks import LinearRegressionTask, TokenSelectionTask

    with pytest.raises(TypeError, match="dtype"):
        LinearRegressionTask(3, dtype=dtype)
    with pytest.raises(TypeError, match="dtype"):
        TokenSelectionTask(3, dtype=dtype)
