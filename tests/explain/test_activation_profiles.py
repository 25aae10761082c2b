"""Neuron activation profiles against a direct NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.explain.activation_profiles import neuron_activation_profiles

torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 16, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


def _net():
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        m.conv.bias[2] = -100.0  # channel 2 is dead after the ReLU
    return m


def test_nap_matches_numpy_with_labels_and_chunks():
    m = _net()
    x = torch.randn(30, 1, 4, 4)
    labels = torch.arange(30) % 3
    res = neuron_activation_profiles(m, {"act": m.act}, x, labels, group_names=["a", "b", "c"], chunk_size=7)
    acts = m.act(m.conv(x)).detach().numpy()
    prof = np.stack([acts[labels.numpy() == g].mean(0) for g in range(3)])
    np.testing.assert_allclose(res.profiles["act"].numpy(), prof, rtol=1e-5, atol=1e-6)
    alive = (acts.max((0, 2, 3)) - acts.min((0, 2, 3))) > 1e-30
    assert res.alive["act"].tolist() == alive.tolist() and not alive[2]
    norm = (prof - prof.mean(0, keepdims=True)) * alive[None, :, None, None]
    np.testing.assert_allclose(res.normalized["act"].numpy(), norm, rtol=1e-5, atol=1e-6)
    scores = np.abs(norm).mean((0, 2, 3))
    top = res.top_maps("act", k=10).tolist()
    assert 2 not in top and len(top) == 3
    assert top == [int(i) for i in np.argsort(-scores) if alive[i]][:3]
    assert res.counts.tolist() == [10, 10, 10]


def test_nap_overlapping_groups_and_errors():
    m = _net()
    x = torch.randn(12, 1, 4, 4)
    mem = torch.zeros(12, 2, dtype=torch.bool)
    mem[:8, 0] = True
    mem[4:, 1] = True
    res = neuron_activation_profiles(m, {"conv": m.conv}, x, mem)
    acts = m.conv(x).detach()
    torch.testing.assert_close(res.profiles["conv"][1], acts[4:].mean(0))
    with pytest.raises(ValueError, match="no members"):
        neuron_activation_profiles(m, {"conv": m.conv}, x, torch.zeros(12, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="submodule"):
        neuron_activation_profiles(m, {"x": nn.ReLU()}, x, mem)
    m.train()
    with pytest.raises(ValueError, match="training mode"):
        neuron_activation_profiles(m, {"conv": m.conv}, x, mem)
    assert all(not mod._forward_hooks for mod in m.modules())
