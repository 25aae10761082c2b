import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.curvature import DenseOperator, FunctionOperator, HessianOperator
from gradlab.curvature.batch_scaling import (
    LanczosLR,
    batch_hessian_top_eigenvalues,
    bisect_max_stable_lr,
    fit_batch_law,
    scale_learning_rate,
)

from ._models import explicit_hessian, tiny_batch, tiny_mlp


def test_scaling_rules():
    assert scale_learning_rate(0.1, 32, 128, "linear") == pytest.approx(0.4)
    assert scale_learning_rate(1e-3, 32, 128, "sqrt") == pytest.approx(2e-3)
    assert scale_learning_rate(0.1, 64, 16) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="rule"):
        scale_learning_rate(0.1, 32, 64, "cubic")
    with pytest.raises(ValueError, match="batch_size"):
        scale_learning_rate(0.1, 32, 0)


def test_fit_batch_law_recovers_parameters():
    B = np.array([8, 16, 32, 64, 128])
    lam = 0.63 + 34.2 / B
    fit = fit_batch_law(B, lam)
    assert fit.lambda_full == pytest.approx(0.63) and fit.c == pytest.approx(34.2) and fit.rmse < 1e-10
    fixed = fit_batch_law(B, lam + 0.0, lambda_full=0.63)
    assert fixed.c == pytest.approx(34.2)
    np.testing.assert_allclose(fit.max_stable_lr(B), 2 / lam)
    with pytest.raises(ValueError, match="equal length"):
        fit_batch_law([1, 2], [1.0])
    with pytest.raises(ValueError, match="positive"):
        fit_batch_law([0, 2], [1.0, 2.0])


def test_batch_top_eigenvalues_match_explicit_hessians():
    model = tiny_mlp()
    x, y = tiny_batch(n=20)
    CE = nn.CrossEntropyLoss()
    spec = batch_hessian_top_eigenvalues(
        model, CE, x, y, [5, 20], num_batches=2, num_iters=38, generator=torch.Generator().manual_seed(3)
    )
    g = torch.Generator().manual_seed(3)
    idx = torch.randperm(20, generator=g)[:5]  # the first batch drawn
    ref = float(torch.linalg.eigvalsh(explicit_hessian(model, CE, (x[idx], y[idx])))[-1])
    assert spec.lambdas[0, 0] == pytest.approx(ref, rel=1e-6)
    full = float(torch.linalg.eigvalsh(explicit_hessian(model, CE, (x, y)))[-1])
    assert spec.lambda_full == pytest.approx(full, rel=1e-6)
    np.testing.assert_allclose(spec.lambdas[1], full, rtol=1e-6)  # B = N is the full batch
    assert spec.excess_times_batch.shape == (2,)
    with pytest.raises(ValueError, match="batch_sizes"):
        batch_hessian_top_eigenvalues(model, CE, x, y, [50])


def test_bisection_finds_threshold():
    calls = []

    def stable(lr):
        calls.append(lr)
        return lr < 0.37

    lr = bisect_max_stable_lr(stable, 1e-3, 10.0, num_steps=30)
    assert lr == pytest.approx(0.37, rel=1e-6) and lr < 0.37
    assert bisect_max_stable_lr(lambda lr: True, 1e-3, 10.0) == 10.0
    assert bisect_max_stable_lr(lambda lr: False, 1e-3, 10.0) == 1e-3
    with pytest.raises(ValueError, match="high"):
        bisect_max_stable_lr(stable, 1.0, 0.5)


def _quadratic(seed=0):
    torch.manual_seed(seed)
    X = torch.randn(50, 6, dtype=torch.float64) * torch.linspace(0.2, 3.0, 6, dtype=torch.float64)
    y = X @ torch.randn(6, 1, dtype=torch.float64)
    model = nn.Linear(6, 1, bias=False).double()
    mse = nn.MSELoss()
    H = 2 * X.T @ X / 50
    return model, mse, (X, y), H


def test_lanczos_lr_sets_lr_from_lambda_max_and_refreshes_on_interval():
    model, mse, batch, H = _quadratic()
    evals = torch.linalg.eigvalsh(H)
    calls = []

    def curvature():
        calls.append(1)
        return HessianOperator(model, mse, batch)

    opt = torch.optim.SGD(model.parameters(), lr=123.0)
    sched = LanczosLR(opt, curvature, interval=5, num_iters=6, lr_scale=1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0 / float(evals[-1]), rel=1e-9)
    for _ in range(10):
        opt.zero_grad()
        mse(model(batch[0]), batch[1]).backward()
        opt.step()
        sched.step()
    assert len(calls) == 3  # construction, step 5, step 10
    assert sched.get_last_lr()[0] == pytest.approx(1.0 / float(evals[-1]), rel=1e-9)


def test_lanczos_lr_heavy_ball_matches_polyak_and_converges():
    model, mse, batch, H = _quadratic()
    evals = torch.linalg.eigvalsh(H)
    L, mu = float(evals[-1]), float(evals[0])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0)
    sched = LanczosLR(opt, lambda: DenseOperator(H), interval=1000, num_iters=6, momentum=True, kappa_max=1e6)
    lr_ref = 4 / (math.sqrt(L) + math.sqrt(mu)) ** 2
    mom_ref = ((math.sqrt(L) - math.sqrt(mu)) / (math.sqrt(L) + math.sqrt(mu))) ** 2
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_ref, rel=1e-9)
    assert opt.param_groups[0]["momentum"] == pytest.approx(mom_ref, rel=1e-9)
    l0 = float(mse(model(batch[0]), batch[1]).detach())
    for _ in range(150):
        opt.zero_grad()
        mse(model(batch[0]), batch[1]).backward()
        opt.step()
        sched.step()
    assert float(mse(model(batch[0]), batch[1]).detach()) < 1e-8 * l0
    # kappa cap and Adam betas
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    LanczosLR(adam, lambda: DenseOperator(H), momentum=True, kappa_max=4.0, num_iters=6)
    assert adam.param_groups[0]["betas"][0] == pytest.approx(((2 - 1) / (2 + 1)) ** 2)
    state = sched.state_dict()
    assert "curvature_fn" not in state and state["lambda_max"] == pytest.approx(L)


def test_lanczos_lr_bad_input():
    model, mse, batch, H = _quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="curvature_fn"):
        LanczosLR(opt, None)
    with pytest.raises(ValueError, match="kappa_max"):
        LanczosLR(opt, lambda: DenseOperator(H), kappa_max=0.5)
    with pytest.raises(ValueError, match="momentum"):
        LanczosLR(torch.optim.Adagrad(model.parameters()), lambda: DenseOperator(H), momentum=True)
    bad = FunctionOperator(lambda V: V * float("nan"), 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        LanczosLR(opt, lambda: bad)
