"""TrAct (arXiv 2410.23970): closed form in float64 for both branches, conv = linear on unfolded patches, forward /
input / bias gradients unchanged, shared Parameters, bad input."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.training import TrAct, tract_weight_grad


def closed_form(x: np.ndarray, g: np.ndarray, lam: float) -> np.ndarray:
    """G^T X (X^T X / b + lam I)^-1 with numpy's inverse in float64 (the reference, independent of the code)."""
    b, n = x.shape
    return g.T @ x @ np.linalg.inv(x.T @ x / b + lam * np.eye(n))


def weight_grad(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    out = module(x)
    return torch.autograd.grad(out, module.weight, g)[0]


@pytest.mark.parametrize(("b", "n", "m"), [(30, 8, 5), (64, 27, 16), (5, 20, 3), (1, 4, 2), (9, 9, 4)])
@pytest.mark.parametrize("lam", [0.1, 1.0, 1e-3])
def test_linear_matches_closed_form_float64(b, n, m, lam):
    torch.manual_seed(b * 100 + n)
    lin = nn.Linear(n, m).double()
    x = torch.randn(b, n, dtype=torch.float64) * 0.7 + 0.2
    g = torch.randn(b, m, dtype=torch.float64)
    got = weight_grad(TrAct(lin, lam), x, g)
    np.testing.assert_allclose(got.numpy(), closed_form(x.numpy(), g.numpy(), lam), rtol=1e-10, atol=1e-12)


def test_both_branches_agree_and_use_their_own_system():
    # b >= n uses the n×n system and b < n the b×b one: both must equal the same closed form
    torch.manual_seed(0)
    for b, n in ((40, 12), (12, 40)):
        x = torch.randn(b, n, dtype=torch.float64)
        g = torch.randn(b, 6, dtype=torch.float64)
        np.testing.assert_allclose(tract_weight_grad(x, g, 0.1).numpy(), closed_form(x.numpy(), g.numpy(), 0.1),
                                   rtol=1e-10, atol=1e-12)


def test_linear_nd_input_uses_all_rows():
    torch.manual_seed(1)
    lin = nn.Linear(6, 4).double()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    g = torch.randn(3, 5, 4, dtype=torch.float64)
    got = weight_grad(TrAct(lin), x, g)
    ref = closed_form(x.reshape(-1, 6).numpy(), g.reshape(-1, 4).numpy(), 0.1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


def _explicit_patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Rows of unfold(x) after the padding the conv means, computed independently of gradlab's code."""
    kh, kw = conv.kernel_size
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            pads = (0, 0, 0, 0)
        else:
            th, tw = conv.dilation[0] * (kh - 1), conv.dilation[1] * (kw - 1)
            pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    else:
        pads = (conv.padding[1], conv.padding[1], conv.padding[0], conv.padding[0])
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    xp = F.pad(x, pads, mode=mode)
    cols = F.unfold(xp, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


CONV_CASES = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=0),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, padding=2, dilation=2, padding_mode="reflect"),
    dict(kernel_size=3, padding=1, padding_mode="circular", stride=2),
    dict(kernel_size=3, padding=(1, 2), padding_mode="replicate"),
    dict(kernel_size=4, padding="same"),  # asymmetric 'same' (odd total padding)
    dict(kernel_size=3, padding="same", dilation=2, padding_mode="reflect"),
    dict(kernel_size=2, padding="valid", bias=False),
]


@pytest.fixture(params=["gemm", "aten"])
def conv_grad_path(request, monkeypatch):
    """Run a test through both ways of getting G^T X on the CPU: one GEMM on the patch matrix (small layers) and
    ATen's convolution backward (large layers, or when the input gradient is needed too)."""
    import gradlab.training.tract as tract_module

    monkeypatch.setattr(tract_module, "_GEMM_GRAD_MAX_MACS", 10**12 if request.param == "gemm" else -1)
    return request.param


@pytest.mark.parametrize("kwargs", CONV_CASES)
@pytest.mark.parametrize("batch", [3, 1])
def test_conv_equals_linear_on_unfolded_patches(kwargs, batch, conv_grad_path):
    torch.manual_seed(7)
    conv = nn.Conv2d(2, 5, **kwargs).double()
    x = torch.randn(batch, 2, 7, 6, dtype=torch.float64)
    out = conv(x)
    g = torch.randn_like(out)
    got = weight_grad(TrAct(conv, 0.1), x, g)
    patches = _explicit_patches(conv, x)
    g_rows = g.reshape(batch, 5, -1).transpose(1, 2).reshape(-1, 5)
    assert patches.shape[0] == g_rows.shape[0]
    lin = nn.Linear(patches.shape[1], 5, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(conv.weight.reshape(5, -1))
    via_linear = weight_grad(TrAct(lin, 0.1), patches, g_rows)
    torch.testing.assert_close(got.reshape(5, -1), via_linear, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.reshape(5, -1).numpy(), closed_form(patches.numpy(), g_rows.numpy(), 0.1),
                               rtol=1e-10, atol=1e-12)


def test_conv_b_smaller_than_n_branch():
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 4, 3, stride=2).double()  # n = 72, b = 1 * 2 * 2 = 4
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    g = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    got = weight_grad(TrAct(conv), x, g)
    patches = _explicit_patches(conv, x)
    assert patches.shape == (4, 72)
    ref = closed_form(patches.numpy(), g.reshape(1, 4, -1).transpose(1, 2).reshape(-1, 4).numpy(), 0.1)
    np.testing.assert_allclose(got.reshape(4, -1).numpy(), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kwargs", [case for case in CONV_CASES if case.get("bias", True)])
def test_bias_gradient_unchanged_without_input_gradient(kwargs, conv_grad_path):
    # a first layer: the input needs no gradient, so the small-layer path computes the bias gradient as a sum
    torch.manual_seed(12)
    conv = nn.Conv2d(2, 4, **kwargs)
    wrapped = TrAct(conv)
    x = torch.randn(2, 2, 7, 6)
    ref_out, out = conv(x), wrapped(x)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, conv.bias, g)[0],
                               torch.autograd.grad(ref_out, conv.bias, g)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs", CONV_CASES)
def test_forward_input_and_bias_gradients_unchanged(kwargs):
    torch.manual_seed(11)
    conv = nn.Conv2d(2, 4, **kwargs)
    wrapped = TrAct(conv)
    x = torch.randn(2, 2, 7, 6, requires_grad=True)
    ref_out, out = conv(x), wrapped(x)
    assert torch.equal(ref_out, out)
    g = torch.randn_like(out)
    wanted = (x,) + ((conv.bias,) if conv.bias is not None else ())
    ref = torch.autograd.grad(ref_out, wanted, g)
    got = torch.autograd.grad(out, wanted, g)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_linear_forward_and_other_gradients_unchanged():
    torch.manual_seed(2)
    lin = nn.Linear(7, 3)
    x = torch.randn(4, 5, 7, requires_grad=True)
    wrapped = TrAct(lin)
    ref_out, out = lin(x), wrapped(x)
    assert torch.equal(ref_out, out)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(ref_out, (x, lin.bias), g), torch.autograd.grad(out, (x, lin.bias), g)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_no_grad_and_frozen_weight_forward_identical():
    conv = nn.Conv2d(1, 3, 3, padding="same", padding_mode="reflect")
    wrapped = TrAct(conv)
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(conv(x), wrapped(x))
    conv.weight.requires_grad_(False)
    assert torch.equal(conv(x), wrapped(x))


def test_unbatched_conv_input():
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 5, 5, dtype=torch.float64)
    out = TrAct(conv)(x)
    assert out.shape == conv(x).shape == (3, 5, 5)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, conv.weight, g)[0]
    ref = torch.autograd.grad(TrAct(conv)(x.unsqueeze(0)), conv.weight, g.unsqueeze(0))[0]
    torch.testing.assert_close(got, ref)


def test_parameters_shared_and_state_dict_keys():
    conv = nn.Conv2d(3, 8, 3)
    wrapped = TrAct(conv)
    assert wrapped.weight is conv.weight and wrapped.bias is conv.bias
    assert [p for p in wrapped.parameters()] == [conv.weight, conv.bias]
    assert set(wrapped.state_dict()) == {"weight", "bias"}
    lin = nn.Linear(3, 2, bias=False)
    w = TrAct(lin)
    assert w.bias is None and list(w.parameters()) == [lin.weight]
    assert "lambda_=0.1" in repr(w)


def test_optimizer_step_uses_the_tract_gradient():
    torch.manual_seed(5)
    lin = nn.Linear(4, 3).double()
    model = TrAct(lin, 0.5)
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randn(10, 3, dtype=torch.float64)
    w0 = lin.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = ((model(x) - y) ** 2).sum()
    g = (2 * (x @ w0.T + lin.bias.detach() - y)).numpy()
    loss.backward()
    opt.step()
    expected = w0.numpy() - 0.1 * closed_form(x.numpy(), g, 0.5)
    np.testing.assert_allclose(lin.weight.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_large_lambda_tends_to_plain_gradient_over_lambda():
    torch.manual_seed(6)
    x = torch.randn(20, 5, dtype=torch.float64)
    g = torch.randn(20, 3, dtype=torch.float64)
    lam = 1e7
    torch.testing.assert_close(tract_weight_grad(x, g, lam) * lam, g.T @ x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_solved_in_float32(dtype):
    torch.manual_seed(8)
    x = torch.randn(50, 9)
    g = torch.randn(50, 4)
    got = tract_weight_grad(x.to(dtype), g.to(dtype), 0.1)
    assert got.dtype == dtype
    ref = tract_weight_grad(x.to(dtype).float(), g.to(dtype).float(), 0.1).to(dtype)
    assert torch.equal(got, ref)
    assert torch.isfinite(got.float()).all()


def test_float32_is_accurate():
    torch.manual_seed(9)
    x = torch.randn(200, 27) * 0.05  # low contrast: X^T X / b << lambda
    g = torch.randn(200, 16)
    got = tract_weight_grad(x, g, 0.1).double().numpy()
    np.testing.assert_allclose(got, closed_form(x.double().numpy(), g.double().numpy(), 0.1), rtol=1e-4, atol=1e-5)


def test_rejects_other_modules_and_groups():
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        TrAct(nn.Conv1d(2, 3, 3))
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        TrAct(nn.ConvTranspose2d(2, 3, 3))
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        TrAct(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        TrAct(TrAct(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="groups"):
        TrAct(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="lazy"):
        TrAct(nn.LazyLinear(3))

    class Custom(nn.Linear):
        def forward(self, x):  # noqa: ANN001, ANN202
            return super().forward(x) * 2

    with pytest.raises(TypeError, match="overrides"):
        TrAct(Custom(2, 2))


@pytest.mark.parametrize(("lam", "exc"), [(0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError),
                                          (math.inf, ValueError), ("0.1", TypeError), (True, TypeError)])
def test_rejects_bad_lambda(lam, exc):
    with pytest.raises(exc, match="lambda_"):
        TrAct(nn.Linear(2, 2), lam)


def test_tract_weight_grad_bad_shapes():
    with pytest.raises(ValueError, match="same b"):
        tract_weight_grad(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="b×n"):
        tract_weight_grad(torch.randn(4), torch.randn(4, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        tract_weight_grad(np.ones((2, 2)), torch.randn(2, 2))
    assert tract_weight_grad(torch.zeros(0, 3), torch.zeros(0, 2)).shape == (2, 3)


def test_conv_rejects_bad_rank():
    with pytest.raises(ValueError, match="3 or 4 dimensions"):
        TrAct(nn.Conv2d(1, 2, 3))(torch.randn(1, 1, 1, 5, 5))


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 24), n=st.integers(1, 12), m=st.integers(1, 5),
       lam=st.floats(1e-3, 1e3, allow_nan=False), scale=st.floats(1e-3, 10.0), seed=st.integers(0, 10_000))
def test_property_linear_closed_form(b, n, m, lam, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, generator=gen, dtype=torch.float64) * scale
    g = torch.randn(b, m, generator=gen, dtype=torch.float64)
    lin = nn.Linear(n, m).double()
    got = weight_grad(TrAct(lin, lam), x, g).numpy()
    ref = closed_form(x.numpy(), g.numpy(), lam)
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9 * max(1.0, np.abs(ref).max()))


@settings(max_examples=30, deadline=None)
@given(lam=st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan), st.text(max_size=3),
                     st.none()))
def test_property_bad_lambda_always_rejected(lam):
    with pytest.raises((TypeError, ValueError)):
        TrAct(nn.Linear(3, 2), lam)


@pytest.mark.parametrize("layer_fn, shape", [
    (lambda: nn.Linear(12, 5), (8, 12)),     # b < n: the b x b form
    (lambda: nn.Linear(6, 5), (16, 6)),      # b > n: the n x n form
    (lambda: nn.Conv2d(3, 4, 3, stride=1, padding=1), (2, 3, 6, 6)),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=0), (1, 3, 7, 7)),
])
def test_weight_gradient_equals_the_official_torch_tract(layer_fn, shape):
    """Reference: the authors' `torch_tract` package (PyPI torch-tract), float64, on layers it supports."""
    import copy

    import torch_tract

    torch.manual_seed(0)
    base = layer_fn().double()
    ours, theirs = TrAct(copy.deepcopy(base), lambda_=0.1), torch_tract.TrAct(copy.deepcopy(base), 0.1)
    x = torch.randn(shape, dtype=torch.float64)
    for model in (ours, theirs):
        out = model(x)
        (out.square().sum() + out.sum()).backward()
    assert torch.allclose(ours.weight.grad, theirs.weight.grad, rtol=1e-8, atol=1e-10)
    assert torch.allclose(ours.bias.grad, theirs.bias.grad, rtol=1e-10, atol=1e-12)



def test_reused_patch_buffer_gives_the_reference_gradient_step_after_step():
    # the CPU keeps the patch matrix between backward passes: larger, smaller and repeated batches (and the b < n
    # branch) must each see exactly their own patches
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2).double()
    wrapped = TrAct(conv, 0.1)
    for batch, size in ((4, 7), (9, 7), (2, 7), (9, 7), (1, 3)):
        x = torch.randn(batch, 2, size, size, dtype=torch.float64)
        out = conv(x)
        g = torch.randn_like(out)
        got = weight_grad(wrapped, x, g)
        patches = _explicit_patches(conv, x)
        g_rows = g.reshape(batch, 3, -1).transpose(1, 2).reshape(-1, 3)
        np.testing.assert_allclose(got.reshape(3, -1).numpy(), closed_form(patches.numpy(), g_rows.numpy(), 0.1),
                                   rtol=1e-10, atol=1e-12)
    assert wrapped._workspace.buf is not None and not any("workspace" in k for k in wrapped.state_dict())


@pytest.mark.parametrize("kwargs", CONV_CASES)
def test_patch_matrix_with_and_without_the_reused_buffer_equals_unfold(kwargs):
    # the CPU path writes into a kept buffer, the CUDA path allocates: both must be unfold's patches, transposed
    from gradlab.training.tract import _patch_matrix, _Workspace

    torch.manual_seed(3)
    conv = nn.Conv2d(2, 5, **kwargs).double()
    wrapped = TrAct(conv, 0.1)
    x = torch.randn(3, 2, 7, 6, dtype=torch.float64)
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
    xpad = F.pad(x, wrapped._geo.pad)
    out_hw = F.conv2d(xpad, conv.weight, None, conv.stride, 0, conv.dilation).shape[-2:]
    expected = F.unfold(xpad, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
    expected = expected.transpose(0, 1).reshape(expected.shape[1], -1)
    ws = _Workspace()
    for workspace in (None, ws, ws):
        torch.testing.assert_close(_patch_matrix(xpad, wrapped._geo, out_hw, workspace), expected, rtol=0, atol=0)


def test_bfloat16_conv_weight_gradient_is_solved_in_float32(conv_grad_path):
    # low precision: G^T X, X^T X and the solve run in float32 (GEMM path: on float32 copies; ATen path: a separate
    # ATen call for G^T X), then cast back
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6).to(torch.bfloat16)
    g = torch.randn(2, 4, 6, 6).to(torch.bfloat16)
    low = TrAct(copy.deepcopy(conv).to(torch.bfloat16), 0.1)
    got = weight_grad(low, x, g)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got.float()).all()
    ref32 = TrAct(copy.deepcopy(conv).to(torch.bfloat16).float(), 0.1)
    ref = weight_grad(ref32, x.float(), g.float()).to(torch.bfloat16)
    torch.testing.assert_close(got.float(), ref.float(), rtol=1e-2, atol=1e-2)
