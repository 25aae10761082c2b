import pytest
import torch
from torch import nn

from gradlab.explain.level_set import LevelSetTraversal, LSTResult, orthogonal_step


def test_orthogonal_step_is_the_projection():
    g = torch.randn(4, 2, 3)
    v = torch.randn(4, 2, 3)
    out = orthogonal_step(v, g)
    for i in range(4):
        gi, vi = g[i].flatten().double(), v[i].flatten().double()
        proj = torch.eye(6, dtype=torch.float64) - torch.outer(gi, gi) / gi.dot(gi)
        torch.testing.assert_close(out[i].flatten().double(), proj @ vi, atol=1e-6, rtol=1e-6)
        assert abs(float(out[i].flatten().double().dot(gi))) < 1e-5
    torch.testing.assert_close(orthogonal_step(v, torch.zeros_like(v)), v)
    with pytest.raises(ValueError):
        orthogonal_step(v, g[:, :1])


def _model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 3))
    with torch.no_grad():
        model[1].weight.mul_(3.0)
        model[3].weight.mul_(3.0)
    return model.eval()


def _conf(model, x, c):
    return torch.softmax(model(x), dim=1)[:, c]


def test_orthogonal_step_keeps_confidence_to_first_order():
    model = _model()
    x = torch.randn(5, 12, dtype=torch.float64)
    model.double()
    x.requires_grad_(True)
    logp = torch.log_softmax(model(x), dim=1)[:, 0]
    (g,) = torch.autograd.grad(logp.sum(), x)
    v = torch.randn(5, 12, dtype=torch.float64)
    perp = orthogonal_step(v, g)
    x = x.detach()
    for h in (1e-3, 1e-4):
        along = (_conf(model, x + h * v, 0) - _conf(model, x, 0)).abs()
        ortho = (_conf(model, x + h * perp, 0) - _conf(model, x, 0)).abs()
        assert bool((ortho < 0.05 * along).all())  # O(h^2) against O(h)


def test_traversal_keeps_confidence_and_moves_toward_target():
    model = _model(1)
    g = torch.Generator().manual_seed(0)
    pool = torch.rand(400, 1, 3, 4, generator=g)
    with torch.no_grad():
        pred = model(pool).argmax(dim=1)
        conf = torch.softmax(model(pool), dim=1).amax(dim=1)
    cls = int(pred.mode().values)
    src = pool[(pred == cls) & (conf > 0.6)][:6]
    tgt = pool[pred != cls][:6]
    n = min(len(src), len(tgt))
    assert n >= 3
    src, tgt = src[:n], tgt[:n]
    lst = LevelSetTraversal(model, step_size=0.1, n_steps=60, p_thresh=0.05)
    res = lst.traverse(src, tgt)
    assert isinstance(res, LSTResult)
    assert res.path.shape == (61, n, 1, 3, 4) and res.confidences.shape == (61, n)
    assert res.straight_confidences.shape == (21, n) and res.segment_confidences.shape == (21, n)
    torch.testing.assert_close(res.path[0], src)
    assert bool((res.source_class == cls).all())
    # every accepted iterate stays within p_thresh of p0, and the Newton correction keeps it close to p0
    drop = res.source_confidence.unsqueeze(0) - res.confidences
    assert float(drop.max()) < 0.05
    assert float(drop.abs().max()) < 0.05
    # recorded confidences are the model's confidences on the path
    torch.testing.assert_close(res.confidences[-1], _conf(model, res.final, cls).detach())
    torch.testing.assert_close(res.straight_confidences[0], res.source_confidence)
    torch.testing.assert_close(res.straight_confidences[-1], _conf(model, tgt, cls).detach())
    assert float(res.distance_ratio().median()) < 0.9
    assert float(res.final.min()) >= 0.0 and float(res.final.max()) <= 1.0
    # without the accept rule's slack the confidence may not drop below p0 - p_thresh either
    strict = LevelSetTraversal(model, step_size=0.1, n_steps=30, p_thresh=0.01, correction_steps=0).traverse(src, tgt)
    assert float((strict.source_confidence - strict.confidences).max()) < 0.01


def test_traversal_bad_input():
    model = _model()
    x = torch.rand(2, 12)
    with pytest.raises(ValueError, match="training mode"):
        LevelSetTraversal(model.train()).traverse(x, x)
    model.eval()
    with pytest.raises(ValueError, match="same batch-first shape"):
        LevelSetTraversal(model).traverse(x, x[:1])
    with pytest.raises(ValueError):
        LevelSetTraversal(model, step_size=0.0)
    with pytest.raises(ValueError):
        LevelSetTraversal(model, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="source_class"):
        LevelSetTraversal(model).traverse(x, x, source_class=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        LevelSetTraversal(model).traverse(x * float("nan"), x)


def test_first_traversal_step_is_orthogonal_to_the_confidence_gradient():
    model = _model(2).double()
    src = torch.rand(4, 12, dtype=torch.float64)
    tgt = torch.rand(4, 12, dtype=torch.float64)
    res = LevelSetTraversal(model, step_size=0.3, n_steps=1, p_thresh=1.0, correction_steps=0, clip=None).traverse(
        src, tgt, source_class=1)
    x = src.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_conf(model, x, 1).sum(), x)  # gradient of p itself, not log p: same direction
    step = res.path[1] - res.path[0]
    cos = (step * g).sum(dim=1) / (step.norm(dim=1) * g.norm(dim=1))
    assert float(cos.abs().max()) < 1e-8
    v = tgt - src
    expected = 0.3 * (v - ((v * g).sum(dim=1, keepdim=True) / (g * g).sum(dim=1, keepdim=True)) * g)
    torch.testing.assert_close(step, expected)


def test_traversal_dtype_mismatch_is_a_clear_error():
    model = _model()
    with pytest.raises(TypeError, match="dtype"):
        LevelSetTraversal(model).traverse(torch.rand(2, 12, dtype=torch.float64), torch.rand(2, 12, dtype=torch.float64))


_FIELDS = ("path", "confidences", "source_confidence", "interpolation", "straight_confidences", "segment_confidences",
           "acceptance_rate", "source", "target", "source_class")


@pytest.mark.parametrize("kwargs", [
    {"step_size": 0.3, "correction_steps": 0},
    {"step_size": 1.0, "correction_steps": 1, "init_noise": 0.02, "seed": 3},
])
def test_chunked_traversal_matches_unchunked(kwargs):
    model = _model(1).double()
    g = torch.Generator().manual_seed(1)
    src = torch.rand(5, 1, 3, 4, generator=g, dtype=torch.float64)
    tgt = torch.rand(5, 1, 3, 4, generator=g, dtype=torch.float64)
    common = dict(n_steps=25, p_thresh=0.003, n_interp=7, **kwargs)
    whole = LevelSetTraversal(model, chunk_size=None, **common).traverse(src, tgt)
    # some proposals are rejected, so the per-sample step-size adaptation is exercised
    assert bool((whole.acceptance_rate < 1).any())
    for cs in (1, 2, 4, 5, 100):
        part = LevelSetTraversal(model, chunk_size=cs, **common).traverse(src, tgt)
        for name in _FIELDS:
            torch.testing.assert_close(getattr(part, name), getattr(whole, name), atol=1e-6, rtol=1e-6,
                                       msg=lambda m, name=name, cs=cs: f"{name} (chunk_size={cs}): {m}")
    if "init_noise" not in kwargs:  # without the batch-wide noise draw, each pair alone gives the same traversal
        for i in range(5):
            alone = LevelSetTraversal(model, chunk_size=None, **common).traverse(src[i:i + 1], tgt[i:i + 1])
            torch.testing.assert_close(alone.path[:, 0], whole.path[:, i], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(alone.acceptance_rate[0], whole.acceptance_rate[i])


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_chunk_size_raises(bad):
    with pytest.raises(ValueError, match="chunk_size"):
        LevelSetTraversal(_model(), chunk_size=bad)
    with pytest.raises(TypeError, match="chunk_size"):
        LevelSetTraversal(_model(), chunk_size=2.5)
