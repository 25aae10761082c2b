"""Ensembles and micro-F1 against scikit-learn and hand counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from gradlab.explain.ensembles import MultilabelEnsemble, majority_vote, micro_f1, probability_average

torch.set_num_threads(1)


@pytest.mark.parametrize("seed", range(4))
def test_micro_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    yt = rng.random((40, 3)) < 0.3
    yp = rng.random((40, 3)) < 0.4
    ref = f1_score(yt, yp, average="micro", zero_division=0)
    assert micro_f1(torch.tensor(yt), torch.tensor(yp)) == pytest.approx(ref, abs=1e-12)
    assert micro_f1(torch.tensor(yt).int(), torch.tensor(yt).int()) == 1.0


def test_micro_f1_edge_cases_and_errors():
    z = torch.zeros(3, 2, dtype=torch.bool)
    assert micro_f1(z, z) == f1_score(z.numpy(), z.numpy(), average="micro", zero_division=0) == 0.0
    with pytest.raises(ValueError, match="binary"):
        micro_f1(torch.tensor([[0.5]]), torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="same shape"):
        micro_f1(torch.zeros(2, 2), torch.zeros(2, 3))


def test_majority_and_average_by_hand():
    votes = torch.tensor([[[1, 0]], [[1, 1]], [[0, 1]], [[0, 0]]])  # M=4, N=1, L=2 -> need 2 votes
    assert torch.equal(majority_vote(votes), torch.tensor([[True, True]]))
    assert torch.equal(majority_vote(votes[:3]), torch.tensor([[True, True]]))
    assert torch.equal(majority_vote(votes[2:]), torch.tensor([[False, True]]))
    p = torch.tensor([[[0.9, 0.2]], [[0.3, 0.6]], [[0.4, 0.6]]])
    assert torch.equal(probability_average(p), torch.tensor([[True, False]]))  # means 0.533, 0.467
    with pytest.raises(ValueError):
        probability_average(p * 2)
    with pytest.raises(ValueError):
        majority_vote(torch.tensor([1, 0]))


def test_ensemble_module_majority_beats_noisy_members():
    torch.manual_seed(0)
    y = torch.rand(200, 3) < 0.4
    members = []
    for i in range(5):
        flip = torch.rand(200, 3) < 0.2
        logits = torch.where(y ^ flip, 3.0, -3.0)
        members.append(logits)

    class Table(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.register_buffer("logits", logits)

        def forward(self, idx):
            return self.logits[idx.long().view(-1)]

    models = [Table(lg).eval() for lg in members]
    idx = torch.arange(200).float().view(-1, 1)
    ens = MultilabelEnsemble(models, "majority").eval()
    member_f1 = [micro_f1(y, torch.sigmoid(m(idx)) > 0.5) for m in models]
    assert micro_f1(y, ens.predict(idx)) > max(member_f1)
    soft = MultilabelEnsemble(models, "average").eval()
    assert torch.equal(soft.predict(idx), ens.predict(idx))  # symmetric +-3 logits: soft and hard agree
    out = ens(idx)
    assert out.shape == (200, 3) and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError):
        MultilabelEnsemble([], "majority")
    with pytest.raises(ValueError):
        MultilabelEnsemble(models, "median")
