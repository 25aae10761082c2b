import numpy as np
import pytest
import torch
from torch import nn

from gradlab.explain.evaluation import DiffROARResult, diffroar, unmask_top_k


def test_unmask_top_k_matches_numpy_argsort():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 4, 5, generator=g)
    a = torch.randn(5, 1, 4, 5, generator=g)
    k = 5  # fraction 0.25 of 20
    top = unmask_top_k(x, a, 0.25, largest=True, fill=-9.0)
    bot = unmask_top_k(x, a, 0.25, largest=False, fill=-9.0)
    for i in range(5):
        order = np.argsort(-np.abs(a[i].flatten().numpy()))
        keep_top, keep_bot = set(order[:k]), set(order[-k:])
        for j in range(20):
            exp_t = x[i].flatten()[j] if j in keep_top else -9.0
            exp_b = x[i].flatten()[j] if j in keep_bot else -9.0
            assert top[i].flatten()[j].item() == pytest.approx(float(exp_t))
            assert bot[i].flatten()[j].item() == pytest.approx(float(exp_b))


def test_unmask_fill_tensor_ties_and_minimum_one():
    x = torch.arange(8.0).reshape(2, 4)
    fill = torch.tensor([10.0, 20.0, 30.0, 40.0])
    out = unmask_top_k(x, torch.tensor([[0.0, 0.0, 5.0, 0.0], [1.0, 0.0, 0.0, 0.0]]), 0.01, fill=fill)
    torch.testing.assert_close(out, torch.tensor([[10.0, 20.0, 2.0, 40.0], [4.0, 20.0, 30.0, 40.0]]))
    # all-tied attributions: the kept coordinate is random (seeded), not always the first
    zeros = torch.zeros(64, 10)
    kept = (unmask_top_k(torch.ones(64, 10), zeros, 0.1, fill=0.0, seed=3) != 0).float().argmax(dim=1)
    assert len(set(kept.tolist())) > 3
    first = (unmask_top_k(torch.ones(64, 10), zeros, 0.1, fill=0.0, seed=None) != 0).float().argmax(dim=1)
    assert set(first.tolist()) == {0}
    with pytest.raises(ValueError):
        unmask_top_k(x, torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError):
        unmask_top_k(x, torch.zeros(2, 4), 0.0)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    y = (x[:, :3].sum(dim=1) > 0).long()  # only the first 3 of 12 features matter
    return x, y


def _train(x, y, seed):
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_diffroar_oracle_positive_inverted_negative():
    xtr, ytr = _data(400, 0)
    xte, yte = _data(200, 1)
    oracle = torch.zeros(12)
    oracle[:3] = 1.0
    a_tr, a_te = oracle.expand_as(xtr).clone(), oracle.expand_as(xte).clone()
    res = diffroar(_train, xtr, ytr, a_tr, xte, yte, a_te, fractions=(0.25, 0.5), fill=0.0)
    assert isinstance(res, DiffROARResult) and res.top_accuracy.shape == (1, 2)
    assert res.curve[0] > 0.3  # top-3 keeps the signal, bottom-3 is pure noise
    inv = diffroar(_train, xtr, ytr, 1 - a_tr, xte, yte, 1 - a_te, fractions=(0.25, 0.5), fill=0.0)
    assert inv.curve[0] < -0.3
    assert res.area == pytest.approx(0.25 * 0.5 * (res.curve[0] + res.curve[1]))


def test_diffroar_runs_and_errors():
    xtr, ytr = _data(100, 0)
    xte, yte = _data(50, 1)
    a = torch.rand_like(xtr)
    b = torch.rand_like(xte)
    res = diffroar(_train, xtr, ytr, a, xte, yte, b, fractions=[0.5], n_runs=2, fill="mean")
    assert res.runs.shape == (2, 1) and np.isfinite(res.std).all() and res.area == 0.0
    with pytest.raises(ValueError, match="increasing"):
        diffroar(_train, xtr, ytr, a, xte, yte, b, fractions=(0.5, 0.2))
    with pytest.raises(ValueError, match="attr_test"):
        diffroar(_train, xtr, ytr, a, xte, yte, b[:10], fractions=(0.5,))
    with pytest.raises(ValueError, match="fill"):
        diffroar(_train, xtr, ytr, a, xte, yte, b, fractions=(0.5,), fill="median")
    with pytest.raises(TypeError, match="nn.Module"):
        diffroar(lambda x, y, s: None, xtr, ytr, a, xte, yte, b, fractions=(0.5,))
