import numpy as np
import pytest
import torch
from torch import nn

from gradlab.curvature import (
    DenseOperator,
    DoubleBackwardError,
    GaussNewtonOperator,
    HessianOperator,
    gauss_newton_vector_product,
    hessian_vector_product,
)

from ._models import explicit_ggn, explicit_hessian, tiny_batch, tiny_mlp

CE = nn.CrossEntropyLoss()


def test_hvp_matches_explicit_hessian_fp64():
    model, batch = tiny_mlp(), tiny_batch()
    H = explicit_hessian(model, CE, batch)
    op = HessianOperator(model, CE, batch)
    assert op.size == H.shape[0] == sum(p.numel() for p in model.parameters())
    v = torch.randn(op.size, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.to_dense(), H, rtol=1e-10, atol=1e-12)


def test_matmat_vectorized_equals_loop_and_float32_model_cast_to_fp64():
    model = tiny_mlp().float()
    x, y = tiny_batch()
    batch = (x.float(), y)
    V = torch.randn(sum(p.numel() for p in model.parameters()), 4, dtype=torch.float64)
    a = HessianOperator(model, CE, batch, dtype=torch.float64).matmat(V)
    b = HessianOperator(model, CE, batch, dtype=torch.float64, vectorize=False).matmat(V)
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    H = explicit_hessian(tiny_mlp(), CE, tiny_batch())  # same weights in fp64 up to fp32 rounding
    torch.testing.assert_close(a, H @ V, rtol=1e-4, atol=1e-5)


def test_dict_list_and_one_shot_forms():
    model, batch = tiny_mlp(), tiny_batch()
    H = explicit_hessian(model, CE, batch)
    vs = [torch.randn_like(p) for p in model.parameters()]
    flat = torch.cat([v.reshape(-1) for v in vs])
    as_list = hessian_vector_product(model, CE, batch, vs)
    as_dict = hessian_vector_product(model, CE, batch, dict(zip([n for n, _ in model.named_parameters()], vs)))
    ref = H @ flat
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in as_list]), ref)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in as_dict.values()]), ref)
    assert [t.shape for t in as_list] == [p.shape for p in model.parameters()]


def test_parameter_subset_is_the_hessian_block():
    model, batch = tiny_mlp(), tiny_batch()
    H = explicit_hessian(model, CE, batch)
    op = HessianOperator(model, CE, batch, params=["2.weight", "2.bias"])
    start = 3 * 5 + 5
    torch.testing.assert_close(op.to_dense(), H[start:, start:], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="not found"):
        HessianOperator(model, CE, batch, params=["nope"])


def test_batchnorm_eval_and_train_semantics():
    model, batch = tiny_mlp(bn=True), tiny_batch()
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    before = {n: b.clone() for n, b in model.named_buffers()}
    model.train()
    H_eval = HessianOperator(model, CE, batch).to_dense()
    H_train = HessianOperator(model, CE, batch, eval_mode=False).to_dense()
    assert model.training  # mode restored
    for n, b in model.named_buffers():  # running statistics untouched
        assert torch.equal(b, before[n]), n
    torch.testing.assert_close(H_eval, explicit_hessian(model, CE, batch, train=False), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(H_train, explicit_hessian(model, CE, batch, train=True), rtol=1e-9, atol=1e-11)
    assert (H_eval - H_train).abs().max() > 1e-3  # the two semantics really differ


def test_gauss_newton_matches_explicit_and_is_psd():
    model, batch = tiny_mlp(), tiny_batch()
    G = explicit_ggn(model, CE, batch)
    op = GaussNewtonOperator(model, CE, batch)
    V = torch.randn(op.size, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), G @ V, rtol=1e-10, atol=1e-12)
    assert torch.linalg.eigvalsh(op.to_dense()).min() > -1e-10
    flat = gauss_newton_vector_product(model, CE, batch, V[:, 0])
    torch.testing.assert_close(flat, G @ V[:, 0], rtol=1e-10, atol=1e-12)


def test_gauss_newton_equals_hessian_for_linear_least_squares():
    torch.manual_seed(0)
    model = nn.Linear(4, 2).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    mse = nn.MSELoss()
    torch.testing.assert_close(
        GaussNewtonOperator(model, mse, (x, y)).to_dense(), HessianOperator(model, mse, (x, y)).to_dense()
    )


def test_loss_and_gradient_exposed():
    model, batch = tiny_mlp(), tiny_batch()
    op = HessianOperator(model, CE, batch)
    op.matvec(torch.ones(op.size, dtype=torch.float64))
    loss = CE(model(batch[0]), batch[1])
    g = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(op.loss, loss.detach())
    torch.testing.assert_close(op.gradient, torch.cat([t.reshape(-1) for t in g]))


def test_scipy_linear_operator():
    model, batch = tiny_mlp(), tiny_batch()
    op = HessianOperator(model, CE, batch)
    v = np.random.default_rng(0).standard_normal(op.size)
    np.testing.assert_allclose(op.to_scipy() @ v, (op.to_dense() @ torch.as_tensor(v)).numpy(), rtol=1e-10, atol=1e-12)


def _attention_model():
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)


def test_fused_attention_is_detected_and_math_backend_works():
    model = _attention_model()
    x = torch.randn(2, 5, 8)
    batch = (x, torch.zeros(2, 5, 8))
    mse = nn.MSELoss()
    op = HessianOperator(model, mse, batch)
    v = torch.randn(op.size)
    with pytest.raises(DoubleBackwardError, match="math"):
        op.matvec(v)
    op = HessianOperator(model, mse, batch, math_sdpa=True, dtype=torch.float64)
    w = torch.randn(op.size, dtype=torch.float64)
    hv, hw = op.matvec(v.double()), op.matvec(w)
    torch.testing.assert_close(w @ hv, v.double() @ hw, rtol=1e-8, atol=1e-10)  # symmetric


def test_bad_inputs():
    model, batch = tiny_mlp(), tiny_batch()
    op = HessianOperator(model, CE, batch)
    with pytest.raises(ValueError, match="rows"):
        op.matvec(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        op.matvec(torch.full((op.size,), float("nan"), dtype=torch.float64))
    with pytest.raises(TypeError, match="pair"):
        HessianOperator(model, CE, batch[0])
    with pytest.raises(TypeError):
        HessianOperator(model, "nope", batch)
    with pytest.raises(ValueError, match="scalar"):
        HessianOperator(model, nn.CrossEntropyLoss(reduction="none"), batch).matvec(torch.ones(op.size, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        DenseOperator(torch.ones(2, 3))
    with pytest.raises(ValueError, match="symmetric"):
        DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))


class _TwoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(2, 2, bias=False)

    def forward(self, x, z=None):
        return self.a(x) + self.b(z)


def test_tuple_and_keyword_inputs_agree():
    torch.manual_seed(0)
    model = _TwoInput().double()
    x, z = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    mse = nn.MSELoss()
    H_pos = HessianOperator(model, mse, ((x, z), y)).to_dense()
    H_kw = HessianOperator(model, mse, ({"x": x, "z": z}, y)).to_dense()
    torch.testing.assert_close(H_pos, H_kw)
    # the loss is quadratic in the parameters: H = 2/(N*2) * sum feature outer products, checked explicitly
    feats = torch.cat([x, torch.ones(5, 1, dtype=torch.float64), z], dim=1)  # per-output features
    G = 2 * feats.T @ feats / 10
    # parameter order: a.weight (2x3), a.bias (2), b.weight (2x2); rows of each weight belong to one output
    idx = [[0, 1, 2, 6, 8, 9], [3, 4, 5, 7, 10, 11]]
    for o in range(2):
        torch.testing.assert_close(H_pos[idx[o]][:, idx[o]], G)
