"""Neuron re-ordering: signatures equal torch.quantile, the re-ordered network equals the original (< 1e-6),
and layers whose permutation cannot be absorbed are named in a warning and left in order."""

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.compression import JLCM, ReorderWarning, apply_permutation, neuron_order, plan_reordering, row_signatures


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 6, 3, stride=2)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        h = F.relu(self.bn(self.c1(x)))
        h = torch.flatten(torch.tanh(self.c2(h)), 1)
        return self.fc(h)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = x + torch.relu(self.a(x))  # residual: a's output order is tied to x's
        return self.out(self.b(h).relu())


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return self.b(self.a(x))


def _mlp():
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 16), nn.GELU(),
                         nn.BatchNorm1d(16), nn.Linear(16, 3))


def test_signatures_equal_torch_quantile():
    w = torch.randn(7, 50, dtype=torch.float64)
    q = torch.linspace(0.02, 0.98, 11, dtype=torch.float64)
    torch.testing.assert_close(row_signatures(w), torch.quantile(w, q, dim=1).T)


def test_order_groups_neurons_by_spread():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 10.0, 1.1, 9.0, 0.9, 11.0])
    w = torch.randn(6, 400, generator=g) * scales[:, None]
    perm = neuron_order(w)
    assert perm.tolist()[:3] == [4, 0, 2] and perm.tolist()[3:] == [3, 1, 5]  # sorted by spread


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reordered_mlp_equals_original(dtype):
    torch.manual_seed(0)
    model = _mlp().to(dtype).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model[5].running_mean.normal_()
        model[5].running_var.uniform_(0.5, 2.0)
        model[5].weight.normal_()
    names = ["0", "3", "6"]
    plans = plan_reordering(model, names)
    assert plans["0"].consumer == "3" and plans["3"].consumer == "6" and plans["3"].norms == ["5"]
    assert not plans["6"].possible and "model output" in plans["6"].reason
    x = torch.randn(64, 10, dtype=dtype)
    ref = model(x)
    permuted = copy.deepcopy(model)
    for n in ("0", "3"):
        perm = torch.randperm(permuted.get_submodule(n).weight.shape[0])
        apply_permutation(permuted, plans[n], perm)
    assert not torch.equal(permuted[0].weight, model[0].weight)
    assert (permuted(x) - ref).abs().max() < 1e-6


def test_reordered_convnet_with_batchnorm_and_flatten_equals_original():
    torch.manual_seed(1)
    model = ConvNet().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
    plans = plan_reordering(model, ["c1", "c2", "fc"])
    assert plans["c1"].consumer == "c2" and plans["c1"].norms == ["bn"]
    assert plans["c2"].consumer == "fc" and plans["c2"].block == 9
    x = torch.randn(8, 3, 8, 8)
    ref = model(x)
    permuted = copy.deepcopy(model)
    for n in ("c1", "c2"):
        apply_permutation(permuted, plans[n], torch.randperm(permuted.get_submodule(n).weight.shape[0]))
    assert (permuted(x) - ref).abs().max() < 1e-6


def test_jlcm_reference_equals_original_and_warns_for_output_layer():
    torch.manual_seed(2)
    model = ConvNet().eval()
    x = torch.randn(16, 3, 8, 8)
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(ReorderWarning, match="layer 'fc' is not re-ordered"):
        jl = JLCM(bits=2, groups=2, steps=0).fit(model, x)
    assert set(jl.permutations_) == {"c1", "c2"} and set(jl.not_reordered_) == {"fc"}
    assert any(not torch.equal(p, torch.arange(len(p))) for p in jl.permutations_.values())
    assert (jl.compressed_.reference(x) - model(x)).abs().max() < 1e-6
    for k, v in model.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])


def test_residual_and_untraceable_models_warn_with_reason():
    torch.manual_seed(3)
    with pytest.warns(ReorderWarning) as rec:
        jl = JLCM(bits=1, groups=2, steps=0).fit(Residual(), torch.randn(8, 6))
    assert "function add together with other values" in jl.not_reordered_["a"]
    assert jl.permutations_.keys() == {"b"}
    assert any("layer 'a'" in str(w.message) for w in rec)
    with pytest.warns(ReorderWarning, match="cannot be traced"):
        jl = JLCM(bits=1, groups=2, steps=0).fit(Untraceable(), torch.randn(8, 4))
    assert not jl.permutations_


def test_apply_permutation_rejects_bad_input():
    model = _mlp()
    plans = plan_reordering(model, ["0", "6"])
    with pytest.raises(ValueError, match="permutation of range"):
        apply_permutation(model, plans["0"], torch.zeros(32, dtype=torch.int64))
    with pytest.raises(ValueError, match="cannot be re-ordered"):
        apply_permutation(model, plans["6"], torch.arange(3))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20), seed=st.integers(0, 999))
def test_neuron_order_is_a_permutation(rows, cols, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    perm = neuron_order(w)
    assert sorted(perm.tolist()) == list(range(rows))
    assert torch.equal(neuron_order(w.clone()), perm)  # deterministic


def test_neuron_order_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        neuron_order(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError, match="floating"):
        neuron_order(torch.ones(2, 2, dtype=torch.int64))
