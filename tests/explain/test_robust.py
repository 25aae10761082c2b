import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradlab.explain.robust import PGD, project_l2, project_linf, train_classifier


def test_projections_closed_form():
    d = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    p = project_l2(d, 1.0)
    torch.testing.assert_close(p, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    # projection is the nearest point of the ball: compare with a brute-force search on the circle
    angles = torch.linspace(0, 2 * torch.pi, 20001)
    circle = torch.stack([angles.cos(), angles.sin()], dim=1)
    nearest = circle[(circle - d[0]).norm(dim=1).argmin()]
    torch.testing.assert_close(p[0], nearest, atol=1e-3, rtol=0)
    torch.testing.assert_close(project_linf(torch.tensor([[2.0, -0.1, -3.0]]), 0.5), torch.tensor([[0.5, -0.1, -0.5]]))
    with pytest.raises(ValueError):
        project_l2(d, -1.0)
    with pytest.raises(ValueError):
        project_l2(torch.ones(3), 1.0)


def _linear_model(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(5, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 5, generator=g))
        model.bias.zero_()
    return model


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_on_linear_model_reaches_the_analytic_worst_case(norm):
    model = _linear_model()
    x = torch.randn(6, 5)
    y = model(x).argmax(dim=1)
    eps = 0.3
    # L-infinity: sign steps reach the corner from any random start; L2: from zero every step is along u
    adv = PGD(model, eps=eps, norm=norm, steps=20, clip=None, random_start=(norm == "linf"))(x, y)
    # for a two-class linear model the loss increases along u = w_other - w_y, whatever the point
    w = model.weight.detach()
    u = w[1 - y] - w[y]
    best = x + eps * (u / u.norm(dim=1, keepdim=True) if norm == "l2" else u.sign())
    torch.testing.assert_close(adv, best, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_raises_loss_respects_ball_and_leaves_model_alone(norm):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    model.train()
    x = torch.rand(32, 8)
    y = torch.randint(0, 3, (32,))
    eps = 0.5 if norm == "l2" else 0.1
    adv = PGD(model, eps=eps, norm=norm, steps=10)(x, y)
    delta = (adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert bool((size <= eps + 1e-5).all()) and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert model.training and all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        attacked = F.cross_entropy(model(adv), y)
        noise = torch.randn(x.shape)
        if norm == "l2":
            noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1) * eps
        else:
            noise = noise.sign() * eps
        random = F.cross_entropy(model((x + noise).clamp(0, 1)), y)
    assert attacked > clean and attacked > random


def test_pgd_bad_input():
    model = _linear_model()
    with pytest.raises(ValueError):
        PGD(model, eps=0.1, norm="l1")
    with pytest.raises(ValueError):
        PGD(model, eps=-0.1)
    with pytest.raises(TypeError):
        PGD(lambda x: x, eps=0.1)
    with pytest.raises(ValueError):
        PGD(model, eps=0.1)(torch.rand(3, 5), torch.zeros(2, dtype=torch.long))


def test_adversarial_training_improves_robust_accuracy():
    g = torch.Generator().manual_seed(0)
    n = 400
    y = torch.randint(0, 2, (n,), generator=g)
    # feature 0: robust (margin 1.0); features 1..19: weakly predictive, easy to attack together
    x = torch.randn(n, 20, generator=g) * 0.5
    x[:, 0] += (2 * y - 1).float()
    x[:, 1:] += 0.25 * (2 * y - 1).float().unsqueeze(1)

    def robust_acc(model):
        adv = PGD(model, eps=0.35, norm="linf", steps=10, clip=None)(x, y)
        return (model(adv).argmax(dim=1) == y).float().mean().item()

    torch.manual_seed(0)
    std = train_classifier(nn.Linear(20, 2), x, y, epochs=15, lr=0.05)
    torch.manual_seed(0)
    rob_model = nn.Linear(20, 2)
    rob = train_classifier(rob_model, x, y, epochs=15, lr=0.05,
                           attack=PGD(rob_model, eps=0.35, norm="linf", steps=5, clip=None))
    assert not rob.training
    assert robust_acc(rob) > robust_acc(std) + 0.2
    with pytest.raises(ValueError, match="attack.model"):
        train_classifier(nn.Linear(20, 2), x, y, attack=PGD(std, eps=0.1))


def test_pgd_dtype_mismatch_is_a_clear_error():
    with pytest.raises(TypeError, match="dtype"):
        PGD(_linear_model(), eps=0.1)(torch.rand(3, 5, dtype=torch.float64), torch.zeros(3, dtype=torch.long))
