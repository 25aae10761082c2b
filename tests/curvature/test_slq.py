import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.curvature import HessianOperator
from gradlab.curvature.slq import hutchinson_trace, slq_spectral_density

from ._models import explicit_hessian, tiny_batch, tiny_mlp


def _hessian():
    model, batch = tiny_mlp(), tiny_batch()
    CE = nn.CrossEntropyLoss()
    return HessianOperator(model, CE, batch), explicit_hessian(model, CE, batch)


def test_per_probe_quadrature_is_exact_for_low_degree_moments():
    op, H = _hessian()
    m = 6
    dens = slq_spectral_density(op, num_probes=5, num_iters=m, generator=torch.Generator().manual_seed(0))
    # reconstruct the probes: rerun the same generator draw
    z = (torch.randint(0, 2, (op.size, 5), generator=torch.Generator().manual_seed(0)).double() * 2 - 1)
    v = z / z.norm(dim=0)
    Hk = torch.eye(op.size, dtype=torch.float64)
    for k in range(0, 2 * m):
        ref = (v * (Hk @ v)).sum(0)
        torch.testing.assert_close(dens.per_probe_moment(k), ref, rtol=1e-7, atol=1e-10)
        Hk = Hk @ H
    torch.testing.assert_close(dens.weights.sum(1), torch.ones(5, dtype=torch.float64))


def test_slq_moments_estimate_normalized_trace_powers():
    op, H = _hessian()
    dens = slq_spectral_density(op, num_probes=400, num_iters=10, generator=torch.Generator().manual_seed(1))
    P = op.size
    for k in (1, 2, 3):
        ref = float(torch.trace(torch.linalg.matrix_power(H, k))) / P
        scale = float(torch.linalg.matrix_norm(torch.linalg.matrix_power(H, k), "fro")) / P
        assert abs(dens.moment(k) - ref) < 5 * math.sqrt(2) * scale / math.sqrt(400)  # 5 standard deviations
    assert dens.trace() == pytest.approx(dens.moment(1) * P)
    evals = torch.linalg.eigvalsh(H)
    # Ritz values interlace: inside [lambda_min, lambda_max], close to both ends after 10 steps
    assert float(evals[0]) - 1e-10 <= dens.bottom <= dens.top <= float(evals[-1]) + 1e-10
    assert dens.top == pytest.approx(float(evals[-1]), rel=1e-3)
    assert dens.bottom == pytest.approx(float(evals[0]), rel=1e-2)


def test_density_integrates_to_one_and_full_krylov_is_exact_for_any_function():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    lam = np.linspace(0.5, 3.0, 20)
    A = torch.as_tensor((Q * lam) @ Q.T)
    dens = slq_spectral_density(A, num_probes=3, num_iters=20, generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(-1, 5, 4001, dtype=torch.float64)
    integral = torch.trapezoid(dens.density(grid, sigma=0.05), grid)
    assert float(integral) == pytest.approx(1.0, abs=1e-6)
    # with m = P the quadrature of log is exact per probe: E[v^T log(A) v] = v^T log(A) v
    z = torch.randint(0, 2, (20, 3), generator=torch.Generator().manual_seed(0)).double() * 2 - 1
    v = z / z.norm(dim=0)
    logA = torch.as_tensor((Q * np.log(lam)) @ Q.T)
    ref = float((v * (logA @ v)).sum(0).mean())
    assert dens.expectation(torch.log) == pytest.approx(ref, rel=1e-8)


def test_hutchinson_trace_unbiased_and_exact_for_diagonal():
    D = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    est = hutchinson_trace(D, 7, generator=torch.Generator().manual_seed(0))
    assert est.mean == pytest.approx(55.0) and est.stderr == pytest.approx(0.0, abs=1e-12)  # z_i^2 = 1
    op, H = _hessian()
    est = hutchinson_trace(op, 500, distribution="gaussian", generator=torch.Generator().manual_seed(2))
    assert abs(est.mean - float(torch.trace(H))) < 4 * est.stderr
    assert est.samples.shape == (500,)


def test_bad_inputs():
    D = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="distribution"):
        hutchinson_trace(D, 3, distribution="uniform")
    with pytest.raises(ValueError, match="num_probes"):
        slq_spectral_density(D, num_probes=0)
    dens = slq_spectral_density(D, 2, 2)
    with pytest.raises(ValueError, match="grid"):
        dens.density(torch.zeros(2, 2))
