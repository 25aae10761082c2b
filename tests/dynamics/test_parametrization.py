import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from torch import nn

from gradlab.dynamics.parametrization import (
    PRESETS,
    AbcParametrization,
    abc_param_groups,
    abc_preset,
    param_infos,
)
from gradlab.dynamics.width_models import MLP, TinyTransformer

# (role -> (init exponent a+b, SGD lr exponent c+2a)) read off TP4's abc table by hand
TABLE_SGD = {
    "sp": {"input": (0, 0), "hidden": (0.5, 0), "output": (0.5, 0)},
    "ntk": {"input": (0, 0), "hidden": (0.5, 1), "output": (0.5, 1)},
    "mup": {"input": (0, -1), "hidden": (0.5, 0), "output": (1, 1)},
    "mf": {"input": (0, -1), "hidden": (0.5, 0), "output": (1, 1)},
}


@pytest.mark.parametrize("name", list(TABLE_SGD))
def test_effective_exponents_match_the_table(name):
    p = abc_preset(name)
    for role, (init_e, lr_e) in TABLE_SGD[name].items():
        assert p.init_exponent(role) == pytest.approx(init_e)
        assert p.lr_exponent(role, "sgd") == pytest.approx(lr_e)


def test_feature_learning_exponent_and_regimes():
    mup, ntk, mf = PRESETS["mup"], PRESETS["ntk"], PRESETS["mf"]
    sp_kernel = AbcParametrization(a=(0, 0, 0), b=(0, 0.5, 0.5), c=1)
    assert mup.feature_learning_exponent() == 0 and mup.is_feature_learning() and mup.is_nontrivial()
    assert mf.is_feature_learning()
    for kernel in (ntk, sp_kernel):
        assert kernel.feature_learning_exponent() == pytest.approx(0.5)
        assert kernel.is_stable() and kernel.is_nontrivial() and not kernel.is_feature_learning()
    assert not PRESETS["sp"].is_stable()  # SP with a width-independent lr blows up
    # the abc symmetry (a + t, b - t, c - 2t) preserves effective init/lr exponents and r
    shifted = mup.shifted(0.5)
    assert shifted.a == mf.a and shifted.b == mf.b and shifted.c == mf.c
    with pytest.raises(ValueError, match="3 entries"):
        AbcParametrization(a=(0, 0), b=(0, 0, 0), c=0)


def test_mup_adam_table():
    p = abc_preset("mup", optimizer="adam")  # TP5: input lr eta, hidden/output lr eta / n; output init 1/n
    assert [p.lr_exponent(r, "adam") for r in ("input", "hidden", "output")] == [0, 1, 1]
    assert [p.init_exponent(r) for r in ("input", "hidden", "output")] == [0, 0.5, 1]


@pytest.mark.parametrize("name", ["sp", "ntk", "mup"])
def test_init_std_and_lr_multipliers_absolute_widths(name):
    n, d_in, lr = 1024, 16, 0.1
    torch.manual_seed(0)
    model = MLP(d_in, n, 10)
    groups = abc_param_groups(model, name, lr, absolute_widths=True)
    spec = PRESETS[name]
    by_role = {g["role"]: g for g in groups}
    for role, param in (("input", model.layers[0].weight), ("hidden", model.layers[1].weight),
                        ("output", model.readout.weight)):
        fan_in = param.shape[1]
        const = 1 / math.sqrt(d_in) if role == "input" else 1.0
        expected_std = const * n ** (-spec.init_exponent(role))
        assert param.std().item() == pytest.approx(expected_std, rel=0.05)
        assert by_role[role]["lr"] == pytest.approx(lr * n ** (-spec.lr_exponent(role, "sgd")))
        assert any(p is param for p in by_role[role]["params"])
        assert fan_in in (d_in, n)
    assert by_role["vector"]["lr"] == pytest.approx(by_role["input"]["lr"])
    assert by_role["fixed"]["lr"] == lr and by_role["fixed"]["params"][0] is model.readout.bias
    opt = torch.optim.SGD(groups)  # the groups are accepted by torch.optim as they are
    assert len(opt.param_groups) == len(groups)


def test_shape_inference_on_a_transformer():
    make = lambda w: TinyTransformer(vocab=11, width=w, depth=1, heads=2, max_len=8, attn_scale="mup")
    model = make(64)
    infos = param_infos(model, base=make(16), delta=make(32))
    assert infos["embed.weight"].role == "input" and infos["embed.weight"].width_mult == 4
    assert infos["readout.weight"].role == "output" and infos["readout.bias"].role == "fixed"
    assert infos["blocks.0.qkv.weight"].role == "hidden" and infos["blocks.0.fc2.weight"].role == "hidden"
    assert infos["blocks.0.ln1.weight"].role == "vector"
    groups = abc_param_groups(model, "mup", 1e-3, optimizer="adam", base=make(16), delta=make(32))
    lrs = {g["role"]: g["lr"] for g in groups}
    assert lrs["hidden"] == pytest.approx(1e-3 / 4) and lrs["output"] == pytest.approx(1e-3 / 4)
    assert lrs["input"] == pytest.approx(1e-3)
    out = model(torch.randint(0, 11, (2, 8)))
    assert out.shape == (2, 8, 11) and torch.isfinite(out).all()
    # base width itself: without a delta model nothing would be infinite, with one the multipliers are 1
    base_infos = param_infos(make(16), base=make(16), delta=make(32))
    assert base_infos["blocks.0.qkv.weight"].role == "hidden" and base_infos["blocks.0.qkv.weight"].width_mult == 1


def test_zero_readout_reinit_flag_and_errors():
    model = MLP(4, 32, 3)
    w_hidden = model.layers[1].weight.detach().clone()
    abc_param_groups(model, "mup", 0.1, reinit=False, zero_readout=True, absolute_widths=True)
    assert torch.equal(model.layers[1].weight, w_hidden)
    abc_param_groups(model, "mup", 0.1, zero_readout=True, absolute_widths=True)
    assert torch.count_nonzero(model.readout.weight) == 0
    with pytest.raises(ValueError, match="name"):
        abc_param_groups(model, "unknown", 0.1)
    with pytest.raises(ValueError, match="lr"):
        abc_param_groups(model, "mup", -1.0)
    with pytest.raises(ValueError, match="input and an output"):
        param_infos(nn.Linear(3, 3), absolute_widths=True)


def test_refuses_to_guess_widths():
    """No base: refused unless absolute widths are asked for (muP-SGD's input lr would silently be lr * n);
    a model at the base width without delta: refused (every parameter would silently be one "fixed" group)."""
    model = MLP(4, 128, 3)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="base=.*absolute_widths=True"):
        abc_param_groups(model, "mup", 0.1)
    with pytest.raises(ValueError, match="base="):
        param_infos(model)
    with pytest.raises(ValueError, match="delta="):
        abc_param_groups(model, "mup", 0.1, base=MLP(4, 128, 3))
    with pytest.raises(ValueError, match="cannot be combined"):
        param_infos(model, base=MLP(4, 64, 3), absolute_widths=True)
    with pytest.raises(TypeError, match="absolute_widths"):
        param_infos(model, absolute_widths=1)
    with pytest.raises(TypeError, match="base"):
        param_infos(model, base="MLP")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing re-initialised
    infos = param_infos(MLP(4, 128, 3), base=MLP(4, 128, 3), delta=MLP(4, 256, 3))
    assert {i.role for i in infos.values()} >= {"input", "hidden", "output"}
    assert all(i.width_mult == 1.0 for i in infos.values())


def _mup_pair(width, base_width):
    import mup

    def make_mup(w):
        return nn.Sequential(nn.Linear(16, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), mup.MuReadout(w, 10))

    torch.manual_seed(0)
    ref = make_mup(width)
    mup.set_base_shapes(ref, make_mup(base_width), delta=make_mup(2 * base_width))
    ours = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    m = width / base_width
    with torch.no_grad():
        for i in (0, 2):
            ours[i].weight.copy_(ref[i].weight)
            ours[i].bias.copy_(ref[i].bias)
        ours[4].weight.copy_(ref[4].weight / m)  # MuReadout computes W (x / m): the effective weight is W / m
        ours[4].bias.copy_(ref[4].bias)
    make_plain = lambda w: nn.Sequential(nn.Linear(16, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))
    return mup, ref, ours, make_plain


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_trajectory_matches_the_mup_package(optimizer):
    width, base = 128, 32
    mup, ref, ours, make_plain = _mup_pair(width, base)
    lr = 0.05 if optimizer == "sgd" else 1e-3
    if optimizer == "sgd":
        opt_ref = mup.MuSGD(ref.parameters(), lr=lr)
    else:
        opt_ref = mup.MuAdam(ref.parameters(), lr=lr, eps=1e-12)
    groups = abc_param_groups(ours, "mup", lr, optimizer=optimizer, base=make_plain(base),
                              delta=make_plain(2 * base), reinit=False, extra={"eps": 1e-12} if optimizer == "adam" else None)
    opt = torch.optim.SGD(groups) if optimizer == "sgd" else torch.optim.Adam(groups)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 16, generator=g), torch.randn(32, 10, generator=g)
    for _ in range(4):
        for model, o in ((ref, opt_ref), (ours, opt)):
            o.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            o.step()
        assert torch.allclose(ref(x), ours(x), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(ref[2].weight, ours[2].weight, atol=1e-5)


def _uneven(w1, w2, readout=None):
    """MLP 12 -> w1 -> w2 -> 7 whose hidden layer's fan-in (w1) and fan-out (w2) can grow by different factors."""
    last = readout(w2, 7) if readout is not None else nn.Linear(w2, 7)
    return nn.Sequential(nn.Linear(12, w1), nn.ReLU(), nn.Linear(w1, w2), nn.ReLU(), last)


@pytest.mark.parametrize("widths", [((8, 8), (32, 64)), ((8, 16), (24, 80)), ((10, 10), (40, 20))])
def test_hidden_layer_with_uneven_growth_matches_mup_musgd(widths):
    """A hidden layer whose fan-in and fan-out grow by different factors gets mup.MuSGD's lr (fan_out/fan_in)."""
    import mup

    (b1, b2), (w1, w2) = widths
    torch.manual_seed(3)
    ref = _uneven(w1, w2, mup.MuReadout)
    mup.set_base_shapes(ref, _uneven(b1, b2, mup.MuReadout), delta=_uneven(b1 + 1, b2 + 3, mup.MuReadout))
    ours = _uneven(w1, w2)
    with torch.no_grad():
        for i in (0, 2):
            ours[i].weight.copy_(ref[i].weight)
            ours[i].bias.copy_(ref[i].bias)
        ours[4].weight.copy_(ref[4].weight / (w2 / b2))  # MuReadout: W (x / m)
        ours[4].bias.copy_(ref[4].bias)
    lr = 0.07
    opt_ref = mup.MuSGD(ref.parameters(), lr=lr)
    groups = abc_param_groups(ours, "mup", lr, base=_uneven(b1, b2), delta=_uneven(b1 + 1, b2 + 3), reinit=False)
    ref_lr = {id(p): g["lr"] for g in opt_ref.param_groups for p in g["params"]}
    our_lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    hidden_ref = ref_lr[id(ref[2].weight)]
    assert hidden_ref == pytest.approx(lr * (w2 / b2) / (w1 / b1))
    assert our_lr[id(ours[2].weight)] == pytest.approx(hidden_ref)
    for i in (0, 2):  # input weight and biases: vector-like in mup
        assert our_lr[id(ours[i].bias)] == pytest.approx(ref_lr[id(ref[i].bias)])
    assert our_lr[id(ours[0].weight)] == pytest.approx(ref_lr[id(ref[0].weight)])
    opt = torch.optim.SGD(groups)
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(20, 12, generator=g), torch.randn(20, 7, generator=g)
    for _ in range(3):
        for model, o in ((ref, opt_ref), (ours, opt)):
            o.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            o.step()
    xt = torch.randn(9, 12, generator=g)  # new inputs
    torch.testing.assert_close(ours(xt), ref(xt), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours[2].weight, ref[2].weight, rtol=1e-4, atol=1e-6)


def test_uneven_hidden_layer_rules_for_other_parametrizations():
    """muP-equivalent mf gets the same ratio rule; SP/NTK keep the fan-in rule; Adam muP uses 1/m_in (MuAdam)."""
    from gradlab.dynamics.parametrization import lr_multiplier

    infos = param_infos(_uneven(32, 64), base=_uneven(8, 8), delta=_uneven(9, 11))
    hid = infos["2.weight"]
    assert (hid.role, hid.fan_in_mult, hid.fan_out_mult, hid.width_mult) == ("hidden", 4.0, 8.0, 4.0)
    assert lr_multiplier(hid, PRESETS["mup"]) == pytest.approx(2.0)
    assert lr_multiplier(hid, PRESETS["mf"]) == pytest.approx(2.0)  # (c + 2a) = 0 and the ratio rule
    assert lr_multiplier(hid, PRESETS["sp"]) == 1.0
    assert lr_multiplier(hid, PRESETS["ntk"]) == pytest.approx(1 / 4)
    assert lr_multiplier(hid, abc_preset("mup", "adam"), "adam") == pytest.approx(1 / 4)
    even = param_infos(_uneven(32, 32), base=_uneven(8, 8), delta=_uneven(9, 9))["2.weight"]
    assert lr_multiplier(even, PRESETS["mup"]) == 1.0
    with pytest.raises(TypeError, match="info"):
        lr_multiplier("2.weight", PRESETS["mup"])
    with pytest.raises(ValueError, match="optimizer"):
        lr_multiplier(hid, PRESETS["mup"], "lion")


@settings(max_examples=40, deadline=None)
@given(m_in=st.floats(0.125, 64.0), m_out=st.floats(0.125, 64.0), fan=st.integers(1, 4096))
def test_lr_multiplier_hidden_property(m_in, m_out, fan):
    """muP-SGD hidden multiplier is m_out/m_in for any growth; SP is width-free; NTK uses the fan-in."""
    from gradlab.dynamics.parametrization import ParamInfo, lr_multiplier

    info = ParamInfo("hidden", fan, fan, m_in, m_in, m_out)
    assert lr_multiplier(info, PRESETS["mup"]) == pytest.approx(m_out / m_in)
    assert lr_multiplier(info, PRESETS["sp"]) == 1.0
    assert lr_multiplier(info, PRESETS["ntk"]) == pytest.approx(1.0 / m_in)
    assert lr_multiplier(ParamInfo("fixed", fan, fan, m_in, m_in, m_out), PRESETS["mup"]) == 1.0
