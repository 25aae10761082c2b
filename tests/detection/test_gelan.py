"""GELAN presets: parameter counts, official key layout, strides and input checks; heads."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gradlab.detection import DDetect, DualDDetect, GELANDetector, LayerSpec, gelan_c, gelan_spec_t, gelan_t
from gradlab.detection.gelan import GELANSpec


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_gelan_c_parameter_count_matches_paper():
    m = gelan_c(nc=80)
    n = _count(m)
    assert abs(n - 25.3e6) / 25.3e6 < 0.01  # 25.51M trainable
    m.eval().fuse(fold_batchnorm=True)  # the deployed count the paper reports: 25.3M
    assert abs(_count(m) - 25.3e6) / 25.3e6 < 0.001


def test_gelan_c_official_key_layout():
    keys = set(gelan_c(nc=80).state_dict())
    for k in ("model.0.conv.weight", "model.2.cv1.conv.weight", "model.2.cv2.0.m.0.cv1.conv1.conv.weight",
              "model.2.cv2.0.m.0.cv1.conv2.bn.running_var", "model.2.cv3.1.conv.weight", "model.3.cv1.conv.weight",
              "model.9.cv5.conv.weight", "model.22.cv2.0.1.conv.weight", "model.22.cv3.2.2.bias",
              "model.22.dfl.conv.weight"):
        assert k in keys, k
    assert max(int(k.split(".")[1]) for k in keys) == 22
    sd = gelan_c(nc=80).state_dict()
    assert sd["model.22.cv2.0.1.conv.weight"].shape == (64, 16, 3, 3)  # grouped (g=4) box conv
    assert sd["model.22.cv3.0.2.weight"].shape == (80, 256, 1, 1)


def test_gelan_t_strides_and_outputs():
    m = gelan_t(nc=3, width=0.5, depth=1 / 3).eval()
    assert m.strides == [8.0, 16.0, 32.0] and m.max_stride == 32
    out = m(torch.rand(2, 3, 64, 96))
    assert [o.shape[-2:] for o in out] == [(8, 12), (4, 6), (2, 3)]
    assert all(o.shape[1] == 3 + 64 for o in out)
    boxes, scores = m.decode(out)
    assert boxes.shape == (2, 8 * 12 + 4 * 6 + 2 * 3, 4) and scores.shape[-1] == 3
    assert bool((boxes[..., 2] >= boxes[..., 0]).all())
    dets = m.predict(torch.rand(1, 3, 64, 64))
    assert set(dets[0]) == {"boxes", "scores", "labels"}


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 200), st.integers(1, 200))
def test_sizes_not_divisible_by_the_top_stride_raise(h, w):
    m = gelan_t(nc=1, width=0.25, depth=1 / 3).eval()
    x = torch.rand(1, 3, h, w)
    if h % 32 or w % 32:
        with pytest.raises(ValueError, match="top stride 32"):
            m(x)
    else:
        with torch.no_grad():
            out = m(x)
        assert out[0].shape[-2:] == (h // 8, w // 8)


def test_input_and_spec_validation():
    m = gelan_t(nc=1, width=0.25, depth=1 / 3)
    with pytest.raises(ValueError, match="channels"):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="dimensions"):
        m(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="DDetect"):
        GELANSpec(layers=(LayerSpec(-1, "Conv", (8, 3, 2)),), backbone=1, levels=())
    with pytest.raises(ValueError, match="unknown module"):
        GELANDetector(GELANSpec(layers=(LayerSpec(-1, "Conv", (8, 3, 2)), LayerSpec(-1, "Foo", ()),
                                        LayerSpec((1,), "DDetect", ())), backbone=2, levels=(1,)))
    with pytest.raises(TypeError, match="GELANSpec"):
        GELANDetector([("x",)])
    with pytest.raises(ValueError, match="nc"):
        gelan_t(nc=0)


def test_dfl_decoding_is_the_expectation():
    head = DDetect(2, [8], [8.0])
    logits = torch.randn(1, 4 * 16, 5)
    p = logits.view(1, 4, 16, 5).softmax(2)
    ref = (p * torch.arange(16.0)[None, None, :, None]).sum(2)
    torch.testing.assert_close(head.dfl(logits), ref)
    assert not head.dfl.conv.weight.requires_grad


def test_dual_ddetect_main_head_is_bit_identical():
    torch.manual_seed(0)
    dual = DualDDetect(3, [8, 16, 8, 16], [8.0, 16.0]).eval()
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2), torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]
    aux, main = dual(feats)
    head = dual.main_head().eval()
    for a, b in zip(head(feats[2:]), main):
        assert torch.equal(a, b)
    assert len(aux) == 2 and not torch.equal(aux[0], main[0])
    with pytest.raises(ValueError, match="even"):
        DualDDetect(3, [8, 16, 8], [8.0, 16.0])


def test_official_yolov9_state_dict_maps_to_gelan():
    from gradlab.detection import gelan_state_dict_from_yolov9

    torch.manual_seed(0)
    ref = gelan_t(nc=2, width=0.25, depth=1 / 3)
    sd = ref.state_dict()
    # an official-layout PGI dict: Silence shifts the main branch by one, aux layers 23..37, DualDDetect at 38
    official = {}
    for k, v in sd.items():
        i, rest = int(k.split(".")[1]), k.split(".", 2)[2]
        if i < 22:
            official[f"model.{i + 1}.{rest}"] = v
        else:
            for a, b in (("cv2.", "cv4."), ("cv3.", "cv5."), ("dfl.", "dfl2.")):
                if rest.startswith(a):
                    official[f"model.38.{b}{rest[len(a):]}"] = v
                    official[f"model.38.{a}{rest[len(a):]}"] = torch.randn_like(v.float()).to(v.dtype)  # aux head
    official["model.30.conv.weight"] = torch.randn(3, 3)  # an auxiliary-branch layer: dropped
    out = gelan_state_dict_from_yolov9(official)
    fresh = gelan_t(nc=2, width=0.25, depth=1 / 3)
    fresh.load_state_dict(out, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="main-head"):
        gelan_state_dict_from_yolov9({"model.1.conv.weight": torch.zeros(1)})
