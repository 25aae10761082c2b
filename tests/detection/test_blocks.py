"""GELAN blocks: re-parameterization equivalence, shapes, PGI links."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from gradlab.detection import ADown, AConv, CBFuse, CBLinear, Conv, RepConvN, RepNCSPELAN4, SPPELAN, gelan_t


def _randomise_bn(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 2]), st.integers(0, 2**31 - 1), st.integers(4, 11))
def test_repconvn_fuse_is_equivalent(c1, c2, s, seed, hw):
    torch.manual_seed(seed)
    m = RepConvN(c1, c2, 3, s)
    _randomise_bn(m, seed)
    m.eval()
    x = torch.randn(2, c1, hw, hw)
    ref = m(x)
    m.fuse()
    assert m.fused and not hasattr(m, "conv1") and m.conv.bias is not None
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_repconvn_reference_formula():
    torch.manual_seed(0)
    m = RepConvN(3, 4).eval()
    _randomise_bn(m, 1)
    x = torch.randn(1, 3, 6, 6)

    def bn(y, b):
        return (y - b.running_mean[None, :, None, None]) / torch.sqrt(b.running_var + b.eps)[None, :, None, None] \
            * b.weight[None, :, None, None] + b.bias[None, :, None, None]

    ref = F.silu(bn(F.conv2d(x, m.conv1.conv.weight, padding=1), m.conv1.bn) + bn(F.conv2d(x, m.conv2.conv.weight), m.conv2.bn))
    torch.testing.assert_close(m(x), ref)


def test_whole_model_fuse_and_fold_batchnorm():
    torch.manual_seed(0)
    m = gelan_t(nc=2, width=0.5, depth=1 / 3)
    _randomise_bn(m, 2)
    m.eval()
    x = torch.rand(2, 3, 64, 64)
    ref = m(x)
    m.fuse()
    for a, b in zip(m(x), ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    m.fuse(fold_batchnorm=True)
    assert not any(isinstance(mm, torch.nn.BatchNorm2d) for mm in m.modules())
    for a, b in zip(m(x), ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_block_shapes():
    x = torch.randn(2, 16, 16, 16)
    assert ADown(16, 32)(x).shape == (2, 32, 8, 8)
    assert AConv(16, 24)(x).shape == (2, 24, 8, 8)
    assert RepNCSPELAN4(16, 20, 16, 8, 2)(x).shape == (2, 20, 16, 16)
    assert SPPELAN(16, 12, 8)(x).shape == (2, 12, 16, 16)
    assert Conv(16, 8, 3, 2)(x).shape == (2, 8, 8, 8)


def test_adown_matches_its_definition():
    torch.manual_seed(0)
    m = ADown(8, 12).eval()
    x = torch.randn(1, 8, 10, 10)
    y = F.avg_pool2d(x, 2, 1)
    ref = torch.cat((m.cv1(y[:, :4]), m.cv2(F.max_pool2d(y[:, 4:], 3, 2, 1))), 1)
    torch.testing.assert_close(m(x), ref)


def test_cblinear_cbfuse():
    torch.manual_seed(0)
    lin = CBLinear(6, [4, 5])
    x = torch.randn(1, 6, 4, 4)
    a, b = lin(x)
    assert a.shape == (1, 4, 4, 4) and b.shape == (1, 5, 4, 4)
    torch.testing.assert_close(torch.cat((a, b), 1), lin.conv(x))
    target = torch.randn(1, 4, 8, 8)
    other = [torch.randn(1, 4, 2, 2)]
    out = CBFuse([0, 0])([[a, b], other, target])
    ref = target + a.repeat_interleave(2, 2).repeat_interleave(2, 3) + other[0].repeat_interleave(4, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="chunk lists"):
        CBFuse([0])([target])


def test_block_arguments_validated():
    with pytest.raises(ValueError, match="even"):
        RepNCSPELAN4(8, 8, 7, 4)
    with pytest.raises(ValueError, match="divisible"):
        Conv(6, 8, 3, g=4)
    with pytest.raises(ValueError, match="k=3"):
        RepConvN(4, 4, k=5)
    with pytest.raises(TypeError):
        Conv(4.0, 8)
