"""Function-space layers (arXiv 2506.10973) and our FNO against closed forms, numpy/scipy references and the
discretisation-convergence properties they must have."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from torch import nn

from gradlab.operators import (FNO, FiniteDifferenceConv, InputOutputInterpolation, IntegralLinear,
                               InterpolatedConv, SpectralConv, function_norm, grid_points, h1_loss, lp_loss,
                               quadrature_weights, resample, to_operator)

torch.set_num_threads(1)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TWO_PI = 2 * math.pi


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():  # forward checks only; keeps float() conversions warning-free
        yield


def _sample(fn, n, ndim=1, dtype=torch.float64):
    x = grid_points(n, dtype=dtype)
    if ndim == 1:
        return fn(x)[None, None]
    X, Y = torch.meshgrid(x, x, indexing="ij")
    return fn(X, Y)[None, None]


def _restrict(y, ndim):
    return y[(Ellipsis,) + (slice(None, None, 2),) * ndim]


# ------------------------------------------------------------------------------------------------ grids, norms
def test_grid_and_quadrature_weights():
    np.testing.assert_allclose(grid_points(4).numpy(), [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(grid_points(4, "cell").numpy(), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(grid_points(5, "vertex").numpy(), [0, 0.25, 0.5, 0.75, 1])
    x = np.linspace(0, 1, 33)
    v = np.exp(x)
    np.testing.assert_allclose(float(quadrature_weights(33, "vertex") @ torch.from_numpy(v)), np.trapezoid(v, x),
                               rtol=1e-14)


def test_function_norm_closed_forms():
    v = _sample(lambda x: torch.sin(TWO_PI * x), 16)
    assert abs(float(function_norm(v)) - math.sqrt(0.5)) < 1e-14  # rectangle rule exact on trig polynomials
    vb = torch.cat([v, 2 * v])
    np.testing.assert_allclose(function_norm(vb).numpy(), [math.sqrt(0.5), 2 * math.sqrt(0.5)], rtol=1e-13)
    w = _sample(lambda x, y: torch.sin(TWO_PI * x) * torch.cos(TWO_PI * y), 12, 2)
    assert abs(float(function_norm(w)) - 0.5) < 1e-14
    v256 = _sample(lambda x: torch.sin(TWO_PI * x), 256)
    assert abs(float(function_norm(v256, p=1)) - 2 / math.pi) < 1e-4


def test_lp_loss_relative_and_absolute():
    u = _sample(lambda x: torch.sin(TWO_PI * x), 64)
    pred = 1.1 * u
    assert abs(float(lp_loss(pred, u)) - 0.1) < 1e-12
    # the absolute loss with quadrature converges as the grid is refined; a plain sum would double with n
    errs = [float(lp_loss(_sample(lambda x: x * (1 - x), n), torch.zeros(1, 1, n), relative=False))
            for n in (32, 64, 128)]
    exact = math.sqrt(1 / 30)
    assert abs(errs[-1] - exact) < 1e-4 and abs(errs[-1] - exact) < abs(errs[0] - exact)
    np.testing.assert_allclose(lp_loss(torch.cat([pred, u]), torch.cat([u, u]), reduction="none").numpy(),
                               [0.1, 0.0], atol=1e-12)


def test_h1_loss_closed_form():
    n = 2001
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    u = torch.sin(math.pi * x)[None, None]
    got = float(h1_loss(u, torch.zeros_like(u), relative=False, layout="vertex"))
    assert abs(got - math.sqrt(0.5 + math.pi**2 / 2)) < 1e-3
    assert float(h1_loss(u, u)) == 0.0


# ------------------------------------------------------------------------------------------------ resampling
def test_resample_linear_matches_numpy_interp():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(12)
    out = resample(torch.from_numpy(v)[None, None], 30)[0, 0].numpy()
    xs = np.arange(30) / 30
    ref = np.interp(xs, np.r_[np.arange(12) / 12, 1.0], np.r_[v, v[0]])
    np.testing.assert_allclose(out, ref, atol=1e-14)
    out_v = resample(torch.from_numpy(v)[None, None], 30, layout="vertex")[0, 0].numpy()
    np.testing.assert_allclose(out_v, np.interp(np.linspace(0, 1, 30), np.linspace(0, 1, 12), v), atol=1e-14)


@pytest.mark.parametrize("ndim", [1, 2])
def test_resample_fourier_exact_on_trig_polynomials(ndim):
    fn = (lambda x: torch.sin(TWO_PI * x) + 0.3 * torch.cos(3 * TWO_PI * x)) if ndim == 1 else \
        (lambda x, y: torch.sin(TWO_PI * x) * torch.cos(2 * TWO_PI * y) + torch.cos(3 * TWO_PI * y))
    coarse, fine = _sample(fn, 16, ndim), _sample(fn, 40, ndim)
    torch.testing.assert_close(resample(coarse, 40, mode="fourier"), fine, rtol=0, atol=1e-12)
    torch.testing.assert_close(resample(fine, 16, mode="fourier"), coarse, rtol=0, atol=1e-12)


def test_resample_restriction_of_nested_periodic_grids_is_exact():
    v = torch.randn(2, 3, 64, dtype=torch.float64)
    torch.testing.assert_close(resample(v, 32), v[..., ::2], rtol=0, atol=1e-14)
    w = torch.randn(1, 1, 24, 24, dtype=torch.float64)
    torch.testing.assert_close(resample(w, 8), w[..., ::3, ::3], rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------------------------ differential
def test_fd_conv_converges_to_derivative_of_sin():
    fd = FiniteDifferenceConv(1, 1, 3, padding_mode="circular").double()
    with torch.no_grad():
        fd.weight.copy_(torch.tensor([[[-0.5, 0.0, 0.5]]]))
    errs = []
    for n in (16, 32, 64, 128):
        x = grid_points(n)
        out = fd(torch.sin(TWO_PI * x)[None, None], 1.0 / n)
        errs.append(float((out[0, 0] - TWO_PI * torch.cos(TWO_PI * x)).abs().max().detach()))
    rates = [a / b for a, b in zip(errs, errs[1:])]
    assert errs[-1] < 3e-3 and all(3.8 < r < 4.2 for r in rates)  # second order, centred


def test_fd_conv_random_kernel_converges_to_first_moment_times_derivative():
    torch.manual_seed(0)
    fd = FiniteDifferenceConv(1, 2, 5, padding_mode="circular").double()
    offsets = torch.arange(-2, 3, dtype=torch.float64)
    moment = (fd.weight.detach()[:, 0] * offsets).sum(-1)  # sum_delta w_delta * delta
    errs = []
    for n in (32, 64, 128, 256):
        x = grid_points(n)
        out = fd(torch.sin(TWO_PI * x)[None, None], 1.0 / n)[0]
        ref = moment[:, None] * TWO_PI * torch.cos(TWO_PI * x)[None]
        errs.append(float((out - ref).abs().max().detach()))
    assert errs[-1] < 0.2 * errs[0] and all(1.8 < a / b < 2.2 for a, b in zip(errs, errs[1:]))
    const = torch.full((1, 1, 40), 3.0, dtype=torch.float64)
    assert float(fd(const, 0.1).detach().abs().max()) < 1e-12  # zero-sum kernel kills constants


def test_fd_conv_2d_directional_derivative():
    fd = FiniteDifferenceConv(1, 1, 3, ndim=2, padding_mode="circular").double()
    with torch.no_grad():
        fd.weight.zero_()
        fd.weight[0, 0, 1, 0], fd.weight[0, 0, 1, 2] = -0.5, 0.5  # d/dy
    n = 128
    v = _sample(lambda x, y: torch.sin(TWO_PI * x) * torch.sin(TWO_PI * y), n, 2)
    ref = _sample(lambda x, y: TWO_PI * torch.sin(TWO_PI * x) * torch.cos(TWO_PI * y), n, 2)
    assert float((fd(v, 1 / n) - ref).abs().max().detach()) < 3e-3


# ------------------------------------------------------------------------------------------------ integral layer
def test_integral_linear_agrees_at_n_and_2n():
    torch.manual_seed(0)
    layer = IntegralLinear(1, 2, 6).double()
    fn = lambda x: x * (1 - x) * torch.exp(x)  # noqa: E731
    outs = {n: layer(_sample(fn, n)) for n in (32, 64, 128, 256)}
    diffs = [float((_restrict(outs[2 * n], 1) - outs[n]).abs().max()) for n in (32, 64, 128)]
    assert diffs[-1] < 1e-4 and all(3.5 < a / b < 4.5 for a, b in zip(diffs, diffs[1:]))
    # a plain sum over grid points (no quadrature weights) would double with n; the layer's output does not
    ratio = float(function_norm(outs[256]) / function_norm(outs[128]))
    assert abs(ratio - 1) < 1e-2


def test_integral_linear_matches_scipy_quad():
    torch.manual_seed(1)
    layer = IntegralLinear(1, 1, 4).double()
    W = layer.weight.detach()[0, 0].numpy()

    def phi(k, x):
        return 1.0 if k == 0 else math.sqrt(2) * math.cos(k * math.pi * x)

    def kappa(x, y):
        return sum(W[p, q] * phi(p, x) * phi(q, y) for p in range(4) for q in range(4))

    v = lambda y: math.sin(math.pi * y) ** 2  # noqa: E731
    n = 512
    out = layer(_sample(lambda x: torch.sin(math.pi * x) ** 2, n))[0, 0]
    for j in (0, 100, 333):
        xj = j / n
        ref = integrate.quad(lambda y: kappa(xj, y) * v(y), 0, 1, epsabs=1e-13)[0]
        assert abs(float(out[j]) - ref) < 1e-9


def test_integral_linear_2d_agrees_at_n_and_2n():
    torch.manual_seed(0)
    layer = IntegralLinear(2, 1, 3, ndim=2).double()
    fn = lambda x, y: torch.sin(math.pi * x) * y * (1 - y)  # noqa: E731
    a = _sample(fn, 32, 2).expand(1, 2, 32, 32)
    b = _sample(fn, 64, 2).expand(1, 2, 64, 64)
    assert float((_restrict(layer(b), 2) - layer(a)).abs().max()) < 2e-3 * float(layer(a).abs().max())


# ------------------------------------------------------------------------------------------------ spectral / FNO
@pytest.mark.parametrize("ndim,modes", [(1, 6), (2, (5, 4))])
def test_spectral_conv_restriction_exact_on_band_limited_input(ndim, modes):
    torch.manual_seed(0)
    layer = SpectralConv(2, 3, modes).double()
    fn = (lambda x: torch.sin(TWO_PI * x) + torch.cos(4 * TWO_PI * x)) if ndim == 1 else \
        (lambda x, y: torch.sin(TWO_PI * x) * torch.cos(3 * TWO_PI * y) + torch.cos(2 * TWO_PI * x))
    a = _sample(fn, 32, ndim).expand((1, 2) + (32,) * ndim)
    b = _sample(fn, 64, ndim).expand((1, 2) + (64,) * ndim)
    torch.testing.assert_close(_restrict(layer(b), ndim), layer(a), rtol=0, atol=1e-12)


def test_spectral_conv_matches_direct_fourier_sum():
    """1-D: out(x) = Re sum_{k<m} c_k R_k vhat_k e^{2 pi i k x} (c_0 = 1, c_k = 2), vhat by numpy's FFT."""
    torch.manual_seed(0)
    layer = SpectralConv(1, 1, 5).double()
    R = torch.view_as_complex(layer.weight.detach())[0, 0].numpy()
    rng = np.random.default_rng(0)
    v = rng.standard_normal(20)
    vhat = np.fft.fft(v) / 20
    x = np.arange(20) / 20
    ref = np.zeros(20)
    for k in range(5):
        c = 1.0 if k == 0 else 2.0
        term = R[k] * vhat[k] * np.exp(2j * np.pi * k * x)
        ref += c * (term.real if k else np.real(R[k] * vhat[k]) * np.ones(20))
    out = layer(torch.from_numpy(v)[None, None])[0, 0].detach().numpy()
    np.testing.assert_allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("ndim,modes", [(1, 8), (2, (6, 6))])
def test_fno_at_2n_restricted_equals_fno_at_n(ndim, modes):
    torch.manual_seed(0)
    model = FNO(1, 1, 16, modes, 3).double()
    fn = (lambda x: torch.sin(TWO_PI * x) + 0.5 * torch.cos(3 * TWO_PI * x)) if ndim == 1 else \
        (lambda x, y: torch.sin(TWO_PI * x) * torch.cos(2 * TWO_PI * y))
    with torch.no_grad():
        a, b = model(_sample(fn, 32, ndim)), model(_sample(fn, 64, ndim))
    rel = float((_restrict(b, ndim) - a).norm() / a.norm())
    assert rel < 5e-3  # only the pointwise nonlinearity aliases


def test_spectral_modes_clipped_on_coarse_grids():
    layer = SpectralConv(1, 1, 16).double()
    out = layer(torch.randn(2, 1, 10, dtype=torch.float64))
    assert out.shape == (2, 1, 10) and torch.isfinite(out).all()
    layer2 = SpectralConv(1, 1, (8, 8)).double()
    assert layer2(torch.randn(1, 1, 6, 9, dtype=torch.float64)).shape == (1, 1, 6, 9)


# ------------------------------------------------------------------------------------------------ kernel interpolation
def _trapz_kernel(w: np.ndarray, h: float) -> float:
    return float(h * (w.sum() - 0.5 * (w[0] + w[-1])))


@pytest.mark.parametrize("s", [2, 4])
def test_interpolated_conv_kernel_size_and_integral(s):
    torch.manual_seed(0)
    conv = nn.Conv1d(1, 1, 5, padding=2, bias=False).double()
    ic = InterpolatedConv(conv, 16)
    delta = torch.zeros(1, 1, 16 * s, dtype=torch.float64)
    delta[0, 0, 8 * s] = 1.0
    w_new = ic(delta)[0, 0].detach().numpy()[8 * s - 2 * s: 8 * s + 2 * s + 1][::-1]  # impulse response = kernel
    w = conv.weight.detach()[0, 0].numpy()
    assert np.count_nonzero(ic(delta).detach().numpy()) == s * 5 - s + 1
    ref = np.interp(np.linspace(0, 4, 4 * s + 1), np.arange(5), w) / s  # independent linear interpolation
    np.testing.assert_allclose(w_new, ref, atol=1e-13)
    # the kernel as a function keeps its (trapezoid) integral: h_base * T(w) = h_new * s * T(w_new)
    assert abs(_trapz_kernel(w_new * s, 1.0 / s) - _trapz_kernel(w, 1.0)) < 1e-12


def test_interpolated_conv_identity_at_base_and_2d():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular").double()
    ic = InterpolatedConv(conv, (8, 8))
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(ic(x), conv(x), rtol=0, atol=0)
    y = ic(torch.randn(1, 2, 16, 24, dtype=torch.float64))
    assert y.shape == (1, 3, 16, 24)
    with pytest.raises(ValueError, match="integer"):
        ic(torch.randn(1, 2, 12, 8, dtype=torch.float64))  # s = 1.5, s*(k-1) = 3 but s*padding = 1.5


def test_interpolated_conv_converges_under_refinement():
    torch.manual_seed(0)
    conv = nn.Conv1d(1, 1, 5, padding=2, padding_mode="circular").double()
    ic = InterpolatedConv(conv, 16)
    fn = lambda x: torch.sin(TWO_PI * x)  # noqa: E731
    outs = {n: ic(_sample(fn, n)) for n in (64, 128, 256, 512)}
    diffs = [float((_restrict(outs[2 * n], 1) - outs[n]).abs().max()) for n in (64, 128, 256)]
    assert all(a > b for a, b in zip(diffs, diffs[1:])) and diffs[-1] < 1e-2


# ------------------------------------------------------------------------------------------------ io interpolation
def test_input_output_interpolation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.GELU(), nn.Conv1d(4, 1, 3, padding=1)).double()
    io = InputOutputInterpolation(net, 32)
    x32 = torch.randn(2, 1, 32, dtype=torch.float64)
    torch.testing.assert_close(io(x32), net(x32), rtol=0, atol=0)
    x64 = resample(x32, 64)  # on nested grids the restriction back to 32 is exact
    out = io(x64)
    assert out.shape == (2, 1, 64)
    torch.testing.assert_close(out[..., ::2], net(x32), rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------------------------ to_operator
class _UNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv1d(1, 4, 3, stride=2, padding=1)
        self.mid = nn.Sequential(nn.GELU(), nn.Conv1d(4, 4, 5, padding=2), nn.GELU(), nn.Conv1d(4, 4, 1))
        self.up = nn.ConvTranspose1d(4, 4, 4, stride=2, padding=1)
        self.pool = nn.AvgPool1d(2)
        self.out = nn.Conv1d(4, 1, 3, padding=1)

    def forward(self, x):
        y = self.up(self.mid(self.down(x)))
        return self.out(F.interpolate(self.pool(y), scale_factor=2.0))


def test_to_operator_converts_and_leaves_original_intact():
    torch.manual_seed(0)
    cnn = _UNetish().double()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    op = to_operator(cnn, 32)
    assert isinstance(cnn.down, nn.Conv1d) and isinstance(op.down, InterpolatedConv)
    assert isinstance(op.mid[1], InterpolatedConv) and isinstance(op.mid[3], nn.Conv1d)  # 1x1 kept
    assert isinstance(op.up, InputOutputInterpolation) and isinstance(op.pool, InputOutputInterpolation)
    x = torch.randn(2, 1, 32, dtype=torch.float64)
    torch.testing.assert_close(op(x), cnn(x), rtol=0, atol=0)
    for n in (64, 128):
        assert op(torch.randn(1, 1, n, dtype=torch.float64)).shape == (1, 1, n)
    for k, v in cnn.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_to_operator_output_converges_with_resolution():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2, padding_mode="circular"), nn.GELU(),
                        nn.Conv1d(8, 1, 5, padding=2, padding_mode="circular")).double()
    op = to_operator(cnn, 16)
    fn = lambda x: torch.sin(TWO_PI * x)  # noqa: E731
    outs = {n: op(_sample(fn, n)) for n in (64, 128, 256, 512)}
    diffs = [float((_restrict(outs[2 * n], 1) - outs[n]).abs().max()) for n in (64, 128, 256)]
    assert all(a > b for a, b in zip(diffs, diffs[1:])) and diffs[-1] < 0.4 * diffs[0]


def test_to_operator_keeps_the_physical_receptive_field():
    """Impulse-response support in physical units: constant for the converted CNN, ~1/N for the plain CNN."""
    cnn = nn.Sequential(nn.Conv1d(1, 2, 5, padding=2, bias=False), nn.Conv1d(2, 1, 3, padding=1, bias=False)).double()
    with torch.no_grad():
        for m in cnn:
            m.weight.fill_(1.0)
    op = to_operator(cnn, 32)

    def width(net, n):
        delta = torch.zeros(1, 1, n, dtype=torch.float64)
        delta[0, 0, n // 2] = 1.0
        nz = torch.nonzero(net(delta)[0, 0].detach().abs() > 1e-14).flatten()
        return float(nz.max() - nz.min()) / n

    assert width(op, 32) == width(cnn, 32) == 6 / 32
    assert width(op, 64) == width(op, 128) == 6 / 32
    assert width(cnn, 64) == 6 / 64 and width(cnn, 128) == 6 / 128


def test_to_operator_refuses_resolution_bound_layers():
    with pytest.raises(TypeError, match="IntegralLinear"):
        to_operator(nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(64, 1)), 32)
    with pytest.raises(ValueError, match="no convolution"):
        to_operator(nn.Sequential(nn.GELU()), 32)
    with pytest.raises(TypeError, match="cnn"):
        to_operator("net", 32)


# ------------------------------------------------------------------------------------------------ dtype/device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow(device, dtype):
    kw = dict(device=device, dtype=dtype)
    v = torch.randn(2, 1, 32, **kw)
    assert resample(v, 48).dtype == dtype and resample(v, 48, mode="fourier").device.type == device
    assert function_norm(v).dtype == dtype and lp_loss(v, 2 * v).device.type == device
    assert h1_loss(v, 2 * v).dtype == dtype
    for module in (FNO(1, 1, 8, 4, 2), IntegralLinear(1, 1, 3), SpectralConv(1, 1, 4)):
        out = module.to(**kw)(v)
        assert out.dtype == dtype and out.device.type == device
    fd = FiniteDifferenceConv(1, 1).to(**kw)
    assert fd(v, 0.1).dtype == dtype
    op = to_operator(nn.Sequential(nn.Conv1d(1, 1, 3, padding=1)).to(**kw), 16)
    assert op(v).dtype == dtype


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input():
    v = torch.randn(1, 1, 16)
    with pytest.raises(TypeError, match="torch.Tensor"):
        resample(np.zeros((1, 1, 4)), 8)
    with pytest.raises(ValueError, match="spatial"):
        resample(torch.randn(4, 4), 8)
    with pytest.raises(ValueError, match="size"):
        resample(v, 0)
    with pytest.raises(ValueError, match="fourier"):
        resample(v, 8, layout="vertex", mode="fourier")
    with pytest.raises(ValueError, match="layout"):
        grid_points(8, "staggered")
    with pytest.raises(ValueError, match="h"):
        FiniteDifferenceConv(1, 1)(v, 0.0)
    with pytest.raises(ValueError, match="h"):
        FiniteDifferenceConv(1, 1)(v, float("nan"))
    with pytest.raises(ValueError, match="kernel_size"):
        FiniteDifferenceConv(1, 1, 4)
    with pytest.raises(ValueError, match="channels"):
        FiniteDifferenceConv(2, 1)(v, 0.1)
    with pytest.raises(TypeError, match="modes"):
        SpectralConv(1, 1, "12")
    with pytest.raises(ValueError, match="modes"):
        SpectralConv(1, 1, 0)
    with pytest.raises(ValueError, match="spatial"):
        SpectralConv(1, 1, 4)(torch.randn(1, 1, 8, 8))
    with pytest.raises(TypeError, match="dtype"):
        SpectralConv(1, 1, 4)(torch.randn(1, 1, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape"):
        lp_loss(v, torch.randn(1, 1, 8))
    with pytest.raises(ValueError, match="p"):
        function_norm(v, p=0.5)
    with pytest.raises(ValueError, match="reduction"):
        lp_loss(v, v, reduction="max")
    with pytest.raises(TypeError, match="conv"):
        InterpolatedConv(nn.Linear(2, 2), 8)
    with pytest.raises(ValueError, match="dilation"):
        InterpolatedConv(nn.Conv1d(1, 1, 3, dilation=2), 8)
    with pytest.raises(TypeError, match="floating"):
        FNO(1, 1, 4, 4, 1)(torch.zeros(1, 1, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="channels"):
        FNO(1, 1, 4, 4, 1)(torch.zeros(1, 2, 8))
    with pytest.raises(ValueError, match="channels"):
        IntegralLinear(2, 1, 3)(v)


# ------------------------------------------------------------------------------------------------ properties
@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 50), m=st.integers(2, 80), ndim=st.sampled_from([1, 2]),
       layout=st.sampled_from(["periodic", "vertex", "cell"]))
def test_property_resample_shape_and_constants(n, m, ndim, layout):
    v = torch.full((1, 2) + (n,) * ndim, 1.5, dtype=torch.float64)
    out = resample(v, m, layout=layout)
    assert out.shape == (1, 2) + (m,) * ndim
    torch.testing.assert_close(out, torch.full_like(out, 1.5), rtol=0, atol=1e-13)
    if layout == "periodic":
        outf = resample(v, m, mode="fourier")
        torch.testing.assert_close(outf, torch.full_like(outf, 1.5), rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 64), h=st.floats(1e-4, 10.0), c=st.floats(-5, 5), mode=st.sampled_from(
    ["zeros", "reflect", "replicate", "circular"]))
def test_property_fd_conv_scales_with_inverse_h(n, h, c, mode):
    torch.manual_seed(n)
    fd = FiniteDifferenceConv(1, 2, 3, padding_mode=mode).double()
    v = torch.randn(1, 1, n, dtype=torch.float64)
    out = fd(v + c, h)
    torch.testing.assert_close(out * h, fd(v + c, 1.0), rtol=1e-10, atol=1e-10)
    if mode in ("reflect", "replicate", "circular"):  # constants have zero derivative away from Dirichlet walls
        torch.testing.assert_close(fd(torch.full_like(v, c), h), torch.zeros(1, 2, n, dtype=torch.float64),
                                   rtol=0, atol=1e-9 * (1 + abs(c)) / h)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), p=st.floats(1.0, 4.0), scale=st.floats(0.1, 10.0))
def test_property_lp_loss(n, p, scale):
    torch.manual_seed(n)
    u = torch.randn(3, 1, n, dtype=torch.float64)
    assert float(lp_loss(u, u, p)) == 0.0
    assert abs(float(lp_loss(scale * u, u, p)) - abs(scale - 1)) < 1e-10
    assert float(lp_loss(u + 1, u, p, relative=False)) == pytest.approx(1.0, rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 40), modes=st.integers(1, 24))
def test_property_spectral_conv_any_resolution(n, modes):
    torch.manual_seed(modes)
    layer = SpectralConv(2, 2, modes).double()
    x = torch.randn(1, 2, n, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (1, 2, n) and torch.isfinite(out).all()
    torch.testing.assert_close(layer(3 * x), 3 * out, rtol=1e-12, atol=1e-12)
