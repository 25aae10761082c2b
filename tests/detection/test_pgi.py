"""PGI mechanics: auxiliary branch only in training, gradients, stripping, state round trip."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gradlab.detection import CBFuse, CBLinear, DetectionLoss, GELANDetector, YOLOv9PGI, gelan_spec_t, make_rectangle_scenes


def _model(seed=0):
    torch.manual_seed(seed)
    return YOLOv9PGI(gelan_spec_t(), nc=2, width=0.25, depth=1 / 3)


def test_train_mode_returns_both_heads_eval_runs_no_auxiliary_module():
    model = _model()
    calls = []
    for name, mod in model.aux.named_modules():
        mod.register_forward_hook(lambda m, i, o, n=name: calls.append(n))
    x = torch.rand(2, 3, 64, 64)
    aux, main = model.train()(x)
    assert len(aux) == len(main) == 3 and calls
    calls.clear()
    with torch.no_grad():
        out = model.eval()(x)
    assert calls == [] and len(out) == 3
    assert any(isinstance(m, CBLinear) for m in model.aux.modules())
    assert any(isinstance(m, CBFuse) for m in model.aux.modules())


def test_aux_loss_reaches_backbone_only():
    model = _model().train()
    x, t = make_rectangle_scenes(2, seed=3)
    aux, main = model(x)
    l_aux, _ = DetectionLoss(model.aux_head)(aux, t)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(0.25 * l_aux, params, allow_unused=True)
    n_backbone = model.spec.backbone
    backbone_max, neck_head_max = 0.0, 0.0
    for n, g in zip(names, grads):
        if not n.startswith("model."):
            continue
        v = 0.0 if g is None else float(g.abs().max())
        if int(n.split(".")[1]) < n_backbone:
            backbone_max = max(backbone_max, v)
        else:
            neck_head_max = max(neck_head_max, v)
    assert backbone_max > 0.0
    assert neck_head_max == 0.0
    # the main backbone's aux gradient arrives through CBLinear only: cutting it gives zero
    first_level = model.spec.levels[0]
    g_stem = dict(zip(names, grads))["model.0.conv.weight"]
    assert g_stem is not None and float(g_stem.abs().max()) > 0.0
    assert first_level > 0


def test_stripped_model_is_a_state_dict_subset_with_identical_outputs():
    model = _model(1)
    x, t = make_rectangle_scenes(4, seed=1)
    model.train()
    loss, _ = DetectionLoss(model.head)(model(x)[1], t)
    loss.backward()  # move BN running stats off their init
    model.eval()
    det = model.strip_auxiliary()
    assert type(det) is GELANDetector and not det.training
    full, sub = model.state_dict(), det.state_dict()
    assert set(sub) < set(full) and all(k.startswith("aux.") for k in set(full) - set(sub))
    assert all(torch.equal(sub[k], full[k]) for k in sub)
    assert not any(isinstance(m, (CBLinear, CBFuse)) for m in det.modules())
    with torch.no_grad():
        for a, b in zip(model(x), det(x)):
            assert torch.equal(a, b)
        pa, pb = model.predict(x), det.predict(x)
    for a, b in zip(pa, pb):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    n_full = sum(p.numel() for p in model.parameters())
    n_det = sum(p.numel() for p in det.parameters())
    assert n_det < n_full


def test_state_round_trip(tmp_path):
    model = _model(2)
    x = torch.rand(2, 3, 64, 64)
    model.train()
    model(x)  # update BN running statistics
    path = model.save(tmp_path / "pgi.pt")
    assert not list(tmp_path.glob("*.tmp"))
    back = YOLOv9PGI.load(path)
    sd1, sd2 = model.state_dict(), back.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), back.eval()(x)):
            assert torch.equal(a, b)
    torch.save({"nope": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="YOLOv9PGI"):
        YOLOv9PGI.load(tmp_path / "bad.pt")


@settings(max_examples=6, deadline=None)
@given(st.sampled_from([32, 64, 96]), st.sampled_from([32, 64]), st.integers(1, 3))
def test_pgi_shapes_property(h, w, nc):
    torch.manual_seed(0)
    model = YOLOv9PGI(gelan_spec_t(), nc=nc, width=0.25, depth=1 / 3).train()
    aux, main = model(torch.rand(2, 3, h, w))
    for a, m, s in zip(aux, main, (8, 16, 32)):
        assert a.shape == m.shape == (2, nc + 64, h // s, w // s)
    with pytest.raises(ValueError, match="top stride"):
        model(torch.rand(2, 3, h + 8, w))
