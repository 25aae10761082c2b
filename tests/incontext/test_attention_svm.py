import pytest
import torch

from gradlab.incontext.attention_svm import (
    AttentionSelector, att_svm, directional_correlation, globally_optimal_tokens, margin_matrices, normalized_gd,
    selector_loss, svm_margins,
)
from gradlab.incontext.tasks import TokenSelectionTask

cvxpy = pytest.importorskip("cvxpy")


@pytest.fixture
def tiny():
    b = TokenSelectionTask(5, seed=0).sample(3, 4)
    return b, globally_optimal_tokens(b)


def test_margin_matrices_inner_products(tiny):
    b, opt = tiny
    a = margin_matrices(b.X, b.z, opt)
    assert a.shape == (9, 5, 5)
    w = torch.randn(5, 5, dtype=torch.float64)
    k = 0
    for i in range(3):
        for t in range(4):
            if t == int(opt[i]):
                continue
            ref = (b.X[i, opt[i]] - b.X[i, t]) @ w @ b.z[i]
            torch.testing.assert_close(svm_margins(w, a)[k], ref)
            k += 1


def test_fro_svm_matches_cvxpy_and_kkt(tiny):
    b, opt = tiny
    w = att_svm(b.X, b.z, opt, norm="fro")
    w_cvx = att_svm(b.X, b.z, opt, norm="fro", solver="cvxpy")
    assert float((w - w_cvx).norm() / w_cvx.norm()) < 1e-4
    a = margin_matrices(b.X, b.z, opt)
    margins = svm_margins(w, a)
    assert float(margins.min()) > 1 - 1e-6  # feasible
    # KKT: W = sum alpha_k A_k with alpha >= 0 supported on the active constraints
    active = margins < 1 + 1e-5
    alpha, *_ = torch.linalg.lstsq(a[active].reshape(int(active.sum()), -1).T, w.reshape(-1, 1))
    assert float(alpha.min()) > -1e-6
    torch.testing.assert_close(a[active].reshape(int(active.sum()), -1).T @ alpha, w.reshape(-1, 1), atol=1e-6, rtol=0)


def test_nuclear_svm_feasible_and_lower_rank():
    b = TokenSelectionTask(8, seed=3).sample(4, 5)
    opt = globally_optimal_tokens(b)
    w_nuc = att_svm(b.X, b.z, opt, norm="nuc")
    w_fro = att_svm(b.X, b.z, opt, norm="fro")
    a = margin_matrices(b.X, b.z, opt)
    assert float(svm_margins(w_nuc, a).min()) > 1 - 1e-4
    assert float(torch.linalg.matrix_norm(w_nuc, "nuc")) <= float(torch.linalg.matrix_norm(w_fro, "nuc")) + 1e-4
    assert float(w_fro.norm()) <= float(w_nuc.norm()) + 1e-6
    assert int(torch.linalg.matrix_rank(w_nuc, tol=1e-6)) <= int(torch.linalg.matrix_rank(w_fro, tol=1e-6))


def test_infeasible_svm_raises():
    x = torch.zeros(1, 3, 2, dtype=torch.float64)
    x[0, :, 0] = 1.0  # identical tokens: no W separates them
    z = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="infeasible"):
        att_svm(x, z, torch.tensor([0]), norm="fro")


def test_selector_gradient_matches_finite_differences():
    b = TokenSelectionTask(3, seed=1).sample(2, 3)
    m = AttentionSelector(3, b.v, "W", generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad(selector_loss(m, b), [m.W])
    eps = 1e-6
    with torch.no_grad():
        m.W[0, 1] += eps
        up = float(selector_loss(m, b))
        m.W[0, 1] -= 2 * eps
        down = float(selector_loss(m, b))
    assert abs((up - down) / (2 * eps) - float(g[0, 1])) < 1e-7


def test_normalized_gd_aligns_with_svm():
    b = TokenSelectionTask(6, self_attention=True, seed=0).sample(3, 4)
    m = AttentionSelector(6, b.v, "W", generator=torch.Generator().manual_seed(0))
    hist = normalized_gd(m, b, 400, lr=0.1, record_every=100)
    assert len(hist) == 4
    opt = m.attention(b.X, b.z).argmax(-1)
    w_fro = att_svm(b.X, b.z, opt, norm="fro")
    corr = [directional_correlation(h, w_fro) for h in hist]
    assert corr[-1] > corr[0] and corr[-1] > 0.9
    kq = AttentionSelector(6, b.v, "KQ", rank=3)
    assert kq.combined().shape == (6, 6)


def test_bad_arguments(tiny):
    b, opt = tiny
    with pytest.raises(ValueError, match="norm"):
        att_svm(b.X, b.z, opt, norm="l1")
    with pytest.raises(ValueError, match="opt"):
        margin_matrices(b.X, b.z, torch.tensor([0, 1, 9]))
    with pytest.raises(ValueError, match="scipy"):
        att_svm(b.X, b.z, opt, norm="nuc", solver="scipy")
    with pytest.raises(ValueError, match="v must"):
        AttentionSelector(4, torch.ones(3))


def test_stable_forward_equals_naive_formula():
    b = TokenSelectionTask(4, seed=2).sample(3, 5)
    m = AttentionSelector(4, b.v, "KQ", init_std=2.0, generator=torch.Generator().manual_seed(0))
    naive = torch.einsum("nt,ntd,d->n", m.attention(b.X, b.z), b.X, b.v)
    torch.testing.assert_close(m(b.X, b.z), naive)
    g1 = torch.autograd.grad(m(b.X, b.z).sum(), [m.K])[0]
    g2 = torch.autograd.grad(torch.einsum("nt,ntd,d->n", m.attention(b.X, b.z), b.X, b.v).sum(), [m.K])[0]
    torch.testing.assert_close(g1, g2)
