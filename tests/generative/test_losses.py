"""SSIM / MS-SSIM / MSSSIMLoss (arXiv 1511.06409) against pytorch_msssim and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.generative import MS_SSIM_WEIGHTS, MSSSIMLoss, gaussian_window, min_image_size, ms_ssim, ssim

import pytorch_msssim  # noqa: E402 - reference implementation (test extra); never skipped
import skimage.metrics as skimage_metrics  # noqa: E402 - reference (operators extra)

torch.set_num_threads(1)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


def pair(shape, noise=0.2, seed=0, dtype=torch.float32, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return (x * scale).to(dtype=dtype, device=device), (y * scale).to(dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ms_ssim_equals_pytorch_msssim(device, dtype, data_range):
    x, y = pair((2, 3, 176, 176), dtype=dtype, device=device, scale=data_range)
    ours = ms_ssim(x, y, data_range=data_range)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=data_range)
    assert abs(float(ours) - float(ref)) < 1e-5
    per_image = ms_ssim(x, y, data_range=data_range, reduction="none")
    ref_img = pytorch_msssim.ms_ssim(x, y, data_range=data_range, size_average=False)
    assert per_image.shape == (2,)
    torch.testing.assert_close(per_image, ref_img, atol=1e-5, rtol=0)
    ref_ssim = pytorch_msssim.ssim(x, y, data_range=data_range)
    assert abs(float(ssim(x, y, data_range=data_range)) - float(ref_ssim)) < 1e-5


def test_ms_ssim_levels_renormalised_and_odd_sizes_match_pytorch_msssim():
    x, y = pair((1, 2, 177, 181), seed=1)
    assert abs(float(ms_ssim(x, y)) - float(pytorch_msssim.ms_ssim(x, y, data_range=1.0))) < 1e-5
    w3 = np.array(MS_SSIM_WEIGHTS[:3]) / sum(MS_SSIM_WEIGHTS[:3])
    ours = ms_ssim(x, y, levels=3)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, weights=w3.tolist())
    assert abs(float(ours) - float(ref)) < 1e-5
    explicit = ms_ssim(x, y, weights=[0.5, 0.5])
    assert abs(float(explicit) - float(pytorch_msssim.ms_ssim(x, y, data_range=1.0, weights=[0.5, 0.5]))) < 1e-5


@pytest.mark.parametrize("size", [(11, 11), (32, 32), (40, 57)])
def test_one_level_equals_scikit_image(size):
    x, y = pair((1, 1) + size, noise=0.3, seed=2, dtype=torch.float64)
    ref = skimage_metrics.structural_similarity(x[0, 0].numpy(), y[0, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False, data_range=1.0)
    assert abs(float(ssim(x, y)) - ref) < 1e-10
    assert abs(float(ms_ssim(x, y, levels=1)) - max(ref, 0.0)) < 1e-10


def test_colour_is_channel_mean_of_scikit_image():
    x, y = pair((1, 3, 48, 48), noise=0.3, seed=3, dtype=torch.float64)
    ref = np.mean([skimage_metrics.structural_similarity(x[0, c].numpy(), y[0, c].numpy(), gaussian_weights=True,
                                                         sigma=1.5, use_sample_covariance=False, data_range=1.0)
                   for c in range(3)])
    assert abs(float(ssim(x, y)) - ref) < 1e-10


def test_gaussian_window():
    g = gaussian_window(11, 1.5, dtype=torch.float64)
    i = np.arange(11) - 5
    ref = np.exp(-(i**2) / (2 * 1.5**2))
    np.testing.assert_allclose(g.numpy(), ref / ref.sum(), rtol=1e-14)
    assert min_image_size(5, 11) == 161 and min_image_size(3, 7) == 25 and min_image_size(1, 11) == 11


def test_identity_and_monotone_in_noise():
    x, _ = pair((2, 1, 64, 64), seed=4)
    assert abs(float(ms_ssim(x, x, levels=3, win_size=7)) - 1.0) < 1e-6
    values = [float(ms_ssim(x, pair((2, 1, 64, 64), noise=s, seed=4)[1], levels=3, win_size=7))
              for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_gradcheck_float64():
    x, y = pair((1, 2, 13, 13), noise=0.1, seed=5, dtype=torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: ms_ssim(a, y, levels=2, win_size=5), (x,))
    assert torch.autograd.gradcheck(lambda a: ssim(a, y, win_size=7), (x,))
    loss = MSSSIMLoss(levels=2, win_size=3, reduction="sum")
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,))


def test_gradient_finite_when_cs_is_negative():
    x, _ = pair((2, 1, 32, 32), seed=6)
    y = 1.0 - x  # anti-correlated: cs < 0 at every scale
    x.requires_grad_(True)
    value = ms_ssim(x, y, levels=3, win_size=7)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(x.grad).all()


def test_loss_is_one_minus_ms_ssim_and_trains():
    x, y = pair((4, 1, 32, 32), seed=7)
    loss = MSSSIMLoss(levels=3, win_size=7)
    assert loss.min_size == 25
    torch.testing.assert_close(loss(x, y), 1 - ms_ssim(x, y, levels=3, win_size=7))
    torch.testing.assert_close(MSSSIMLoss(levels=3, win_size=7, reduction="none")(x, y),
                               1 - ms_ssim(x, y, levels=3, win_size=7, reduction="none"))
    z = torch.nn.Parameter(y.clone())
    opt = torch.optim.Adam([z], lr=0.01)
    first = loss(z, x).item()
    for _ in range(30):
        opt.zero_grad()
        loss(z, x).backward()
        opt.step()
    assert loss(z, x).item() < 0.5 * first


def test_too_small_names_size_and_minimum():
    x, y = pair((1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"32x32.*at least 161"):
        ms_ssim(x, y)
    with pytest.raises(ValueError, match=r"24x30.*at least 25"):
        MSSSIMLoss(levels=3, win_size=7)(*pair((1, 1, 24, 30)))
    with pytest.raises(ValueError, match=r"9x9.*at least 11"):
        ssim(*pair((1, 1, 9, 9)))
    assert torch.isfinite(ms_ssim(*pair((1, 1, 25, 25)), levels=3, win_size=7))


def test_bad_input():
    x, y = pair((1, 1, 32, 32))
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, y[..., :31])
    with pytest.raises(ValueError, match="dimensions"):
        ssim(x[0], y[0])
    with pytest.raises(TypeError, match="floating"):
        ssim((x * 255).long(), (y * 255).long())
    with pytest.raises(TypeError, match="torch.Tensor"):
        ssim(x.numpy(), y)
    with pytest.raises(TypeError, match="dtype"):
        ssim(x, y.double())
    bad = x.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        ms_ssim(bad, y, levels=2, win_size=7)
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, y, data_range=0)
    with pytest.raises(ValueError, match="win_size must be odd"):
        ssim(x, y, win_size=8)
    with pytest.raises(ValueError, match="win_sigma"):
        ssim(x, y, win_sigma=-1.0)
    with pytest.raises(ValueError, match="levels"):
        ms_ssim(x, y, levels=6)
    with pytest.raises(ValueError, match="levels"):
        ms_ssim(x, y, levels=0)
    with pytest.raises(ValueError, match="weights"):
        ms_ssim(x, y, weights=[0.5, -0.5])
    with pytest.raises(ValueError, match="len\\(weights\\)"):
        ms_ssim(x, y, levels=3, weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="reduction"):
        ssim(x, y, reduction="sum")
    with pytest.raises(ValueError, match="reduction"):
        MSSSIMLoss(reduction="max")


@settings(max_examples=30, deadline=None)
@given(h=st.integers(25, 60), w=st.integers(25, 60), n=st.integers(1, 3), c=st.integers(1, 3),
       noise=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_property_range_symmetry_identity(h, w, n, c, noise, seed):
    x, y = pair((n, c, h, w), noise=noise, seed=seed, dtype=torch.float64)
    v = ms_ssim(x, y, levels=3, win_size=7, reduction="none")
    assert v.shape == (n,) and torch.isfinite(v).all()
    assert bool(((v >= 0) & (v <= 1 + 1e-12)).all())
    torch.testing.assert_close(v, ms_ssim(y, x, levels=3, win_size=7, reduction="none"))
    torch.testing.assert_close(ms_ssim(x, x, levels=3, win_size=7), torch.tensor(1.0, dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(win=st.integers(-3, 15), levels=st.integers(-1, 7), side=st.integers(1, 80))
def test_property_bad_configurations_raise_clearly(win, levels, side):
    x, y = pair((1, 1, side, side))
    valid_cfg = win >= 1 and win % 2 == 1 and 1 <= levels <= 5
    if not valid_cfg:
        with pytest.raises(ValueError, match="win_size|levels"):
            ms_ssim(x, y, win_size=win, levels=levels)
    elif side < min_image_size(levels, win):
        with pytest.raises(ValueError, match=f"at least {min_image_size(levels, win)}"):
            ms_ssim(x, y, win_size=win, levels=levels)
    else:
        assert torch.isfinite(ms_ssim(x, y, win_size=win, levels=levels))
