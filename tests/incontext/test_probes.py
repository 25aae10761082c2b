import pytest
import torch

from gradlab.incontext.learners import gd_iterates, newton_iterates, prefix_predictions
from gradlab.incontext.probes import (
    RidgeProbe, best_match, compare_weights, matrix_correlation, prediction_similarity, sensitivity_cosine,
    similarity_matrix,
)
from gradlab.incontext.tasks import LinearRegressionTask


def test_prediction_similarity_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    torch.testing.assert_close(prediction_similarity(a, b), torch.tensor(0.5))
    torch.testing.assert_close(prediction_similarity(a, b, "mse"), torch.tensor((1 + 4 + 1 + 1) / 4))
    with pytest.raises(ValueError, match="metric"):
        prediction_similarity(a, b, "l1")


def test_algorithm_vs_algorithm_best_match_is_exact():
    b = LinearRegressionTask(3, seed=0, dtype=torch.float64).sample(64, 10)
    ks = [1, 2, 3, 4, 6, 8]
    newton = prefix_predictions(lambda x, y: newton_iterates(x, y, ks), b.xs, b.ys)
    model = newton[[1, 3, 5]]  # pretend three layers implement Newton-2, -4, -8
    sim = similarity_matrix(model, newton, b.ys)
    idx, val = best_match(sim)
    assert [ks[i] for i in idx.tolist()] == [2, 4, 8]
    torch.testing.assert_close(val, torch.ones(3, dtype=torch.float64))
    mse = similarity_matrix(model, newton, b.ys, metric="mse")
    assert best_match(mse, "mse")[0].tolist() == idx.tolist()
    gd = prefix_predictions(lambda x, y: gd_iterates(x, y, [1, 10, 100], 0.01), b.xs, b.ys)
    assert similarity_matrix(model, gd, b.ys).shape == (3, 3)


def test_ridge_probe_recovers_linear_readout():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 50, 7, 5, generator=g, dtype=torch.float64)  # (layers, prompts, positions, width)
    coef = torch.randn(5, generator=g, dtype=torch.float64)
    y = h[1] @ coef + 0.5
    probe = RidgeProbe(lam=0.0).fit(h, y)
    pred = probe.predict(h)
    assert pred.shape == (2, 50, 7)
    torch.testing.assert_close(pred[1], y)
    assert float((pred[0] - y).pow(2).mean()) > 0.1
    single = RidgeProbe(lam=0.0).fit(h[1], y)
    torch.testing.assert_close(single.predict(h[1]), y)
    with pytest.raises(RuntimeError):
        RidgeProbe().predict(h)
    with pytest.raises(ValueError, match="hidden"):
        RidgeProbe().fit(h, y[:, :3])


def test_matrix_correlation_and_compare_weights():
    a = torch.randn(4, 4)
    assert abs(matrix_correlation(3 * a, a) - 1) < 1e-12
    assert abs(matrix_correlation(-a, a) + 1) < 1e-12
    e = torch.eye(2)
    assert abs(matrix_correlation(e, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))) < 1e-12
    res = compare_weights({"m": 2.5 * a}, {"m": a})
    assert abs(res["m"]["scale"] - 2.5) < 1e-6 and res["m"]["relative_residual"] < 1e-6
    with pytest.raises(KeyError):
        compare_weights({}, {"m": a})
    with pytest.raises(ValueError, match="shape"):
        matrix_correlation(a, torch.zeros(3, 3))


def test_sensitivity_cosine():
    w1 = torch.tensor([1.0, 2.0, 0.0])
    w2 = torch.tensor([2.0, 4.0, 0.0])
    w3 = torch.tensor([0.0, 0.0, 1.0])
    x = torch.randn(5, 3)
    torch.testing.assert_close(sensitivity_cosine(lambda q: q @ w1, lambda q: q @ w2, x), torch.tensor(1.0))
    torch.testing.assert_close(sensitivity_cosine(lambda q: q @ w1, lambda q: q @ w3, x), torch.tensor(0.0))
    # quadratic model: gradient 2 x, compared with the linear model x -> x . x0 at x0
    cos = sensitivity_cosine(lambda q: (q * q).sum(-1), lambda q: (q * x).sum(-1), x)
    torch.testing.assert_close(cos, torch.tensor(1.0))
