import math

import pytest
import torch

from gradlab.dynamics.xor_cluster import XORClusterTask, XORTwoLayerReLU, accuracy, train_xor_gd


def test_sample_shapes_labels_and_clusters():
    task = XORClusterTask(dim=50, mu_norm=10.0, flip_prob=0.2, noise_std=0.0)
    b = task.sample(4000, torch.Generator().manual_seed(0))
    assert b.x.shape == (4000, 50) and b.y.shape == (4000,)
    # without noise x is exactly ±mu_c; label +1 for mu_1 (coordinate 0), -1 for mu_2 (coordinate 1)
    on_mu1 = b.x[:, 0].abs() == 10.0
    assert torch.equal(on_mu1, b.cluster < 2)
    assert torch.all(b.y_clean[on_mu1] == 1) and torch.all(b.y_clean[~on_mu1] == -1)
    assert torch.equal(b.y, torch.where(b.flipped, -b.y_clean, b.y_clean))
    assert abs(b.flipped.float().mean().item() - 0.2) < 0.03
    assert set(b.cluster.tolist()) == {0, 1, 2, 3}
    assert not task.sample(100, flip=False).flipped.any()


def test_custom_means_and_bad_arguments():
    means = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 5.0]])
    task = XORClusterTask(dim=3, mu_norm=1.0, means=means)
    assert task.mu_norm == pytest.approx(5.0)
    with pytest.raises(ValueError, match="orthogonal"):
        XORClusterTask(dim=3, mu_norm=1.0, means=torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0]]))
    with pytest.raises(ValueError, match="flip_prob"):
        XORClusterTask(dim=3, mu_norm=1.0, flip_prob=0.7)
    with pytest.raises(ValueError, match="width"):
        XORTwoLayerReLU(3, 5)
    with pytest.raises(ValueError, match="lr"):
        train_xor_gd(XORTwoLayerReLU(3, 4), task.sample(5), lr=-1.0, steps=1)


def test_model_second_layer_and_forward():
    model = XORTwoLayerReLU(4, 6, init_std=1.0, generator=torch.Generator().manual_seed(0))
    a = model.second_layer
    assert torch.allclose(a.abs(), torch.full((6,), 1 / math.sqrt(6)))
    assert (a > 0).sum() == 3
    x = torch.randn(7, 4)
    w = model.weight.detach()
    manual = torch.stack([sum(a[j] * max(0.0, float(w[j] @ xi)) for j in range(6)) for xi in x])
    assert torch.allclose(model(x), manual.float(), atol=1e-6)
    assert list(model.parameters()) == [model.weight]  # only W is trained


def test_one_gd_step_matches_the_hand_gradient():
    g = torch.Generator().manual_seed(1)
    task = XORClusterTask(dim=20, mu_norm=3.0, flip_prob=0.1)
    data = task.sample(30, g)
    model = XORTwoLayerReLU(20, 8, init_std=0.5, generator=g)
    w0, a, x, y = model.weight.detach().clone(), model.second_layer, data.x, data.y
    f = torch.relu(x @ w0.T) @ a
    s = torch.sigmoid(-y * f)  # -d/df log(1 + e^{-yf}) = y sigmoid(-yf)
    act = (x @ w0.T > 0).float()  # (n, m)
    grad = -(a[:, None] / 30) * ((y * s)[:, None] * act).T @ x  # (m, p)
    train_xor_gd(model, data, lr=0.3, steps=1)
    assert torch.allclose(model.weight, w0 - 0.3 * grad, atol=1e-6)


def test_history_and_one_step_overfitting():
    g = torch.Generator().manual_seed(0)
    task = XORClusterTask(dim=2000, mu_norm=math.sqrt(300), flip_prob=0.1)
    train, test = task.sample(40, g), task.sample(300, g, flip=False)
    model = XORTwoLayerReLU(2000, 40, init_std=1e-6, generator=g)
    hist = train_xor_gd(model, train, lr=0.02, steps=3, test=test, record_at=[0, 1, 3])
    assert hist.steps == [0, 1, 3]
    assert hist.at(1)["train_acc"] >= 0.95  # p >> n: one step (nearly) interpolates the noisy labels
    assert all(0 <= v <= 1 for v in hist.test_acc)
    assert accuracy(torch.tensor([1.0, -1.0, 0.0]), torch.tensor([1.0, 1.0, 1.0])) == pytest.approx(1 / 3)
    clean = task.sample(10, g, flip=False)
    h = train_xor_gd(XORTwoLayerReLU(2000, 4), clean, lr=0.01, steps=1)
    assert math.isnan(h.flipped_fit[0]) and math.isnan(h.test_acc[0])


def test_neuron_alignment():
    model = XORTwoLayerReLU(5, 4)
    means = torch.tensor([[2.0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0]])
    with torch.no_grad():
        model.weight.zero_()
        model.weight[:2, 0] = torch.tensor([1.0, -4.0])  # a_j > 0 neurons along ±mu_1
        model.weight[2:, 1] = torch.tensor([0.5, -2.0])  # a_j < 0 neurons along ±mu_2
    assert torch.allclose(model.neuron_alignment(means), torch.eye(2))


def test_accuracy_refuses_mismatched_shapes_instead_of_broadcasting():
    import pytest
    import torch

    from gradlab.dynamics.xor_cluster import accuracy

    y = torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert accuracy(torch.tensor([[2.0], [-1.0], [-3.0], [-0.5]]), y) == 0.75  # (n, 1) scores are fine
    with pytest.raises(ValueError, match="shape"):
        accuracy(torch.ones(4, 2), y)
    with pytest.raises(ValueError, match="shape"):
        accuracy(torch.ones(3), y)
    with pytest.raises(ValueError, match="NaN"):
        accuracy(torch.tensor([float("nan"), 1.0, 1.0, 1.0]), y)
    with pytest.raises(TypeError, match="scores"):
        accuracy([1, 2], y)
