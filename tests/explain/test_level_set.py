import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.explain.level_set import OFFICIAL_INIT_NOISE, LevelSetTraversal, LSTResult, orthogonal_step


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


def _pairs(model, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    pool = torch.rand(400, 1, 3, 4, generator=g)
    with torch.no_grad():
        pred = model(pool).argmax(dim=1)
        conf = torch.softmax(model(pool), dim=1).amax(dim=1)
    cls = int(pred.mode().values)
    src = pool[(pred == cls) & (conf > 0.6)][:n]
    tgt = pool[pred != cls][:n]
    k = min(len(src), len(tgt))
    assert k >= 3
    return src[:k], tgt[:k], cls


def test_traversal_keeps_confidence_and_moves_toward_target():
    model = _model(1)
    src, tgt, cls = _pairs(model)
    n = len(src)
    lst = LevelSetTraversal(model, step_size=0.1, n_steps=60, p_thresh=0.05)  # the paper's rule (default)
    res = lst.traverse(src, tgt)
    assert isinstance(res, LSTResult)
    assert res.path.shape == (61, n, 1, 3, 4) and res.confidences.shape == (61, n)
    assert res.straight_confidences.shape == (21, n) and res.segment_confidences.shape == (21, n)
    # the start is the source plus the official U(-2/255, 2/255) noise, clipped to [0, 1]
    assert float((res.path[0] - src).abs().max()) <= OFFICIAL_INIT_NOISE + 1e-7
    assert float((res.path[0] - src).abs().max()) > 0
    assert bool((res.source_class == cls).all())
    # every accepted iterate stays within p_thresh of p0 (the acceptance rule); rejected ones repeat the last iterate
    drop = res.source_confidence.unsqueeze(0) - res.confidences[1:]
    moved = (res.path[1:] != res.path[:-1]).flatten(2).any(dim=2)
    assert bool(moved.any())
    assert float(drop[moved].max()) < 0.05
    # recorded confidences are the model's confidences on the path
    torch.testing.assert_close(res.confidences[-1], _conf(model, res.final, cls).detach())
    torch.testing.assert_close(res.straight_confidences[0], res.source_confidence)
    torch.testing.assert_close(res.straight_confidences[-1], _conf(model, tgt, cls).detach())
    assert float(res.distance_ratio().median()) < 0.9
    assert float(res.final.min()) >= 0.0 and float(res.final.max()) <= 1.0
    # the Newton variant also keeps the confidence close to p0 from above (it corrects back onto the level set)
    newton = LevelSetTraversal(model, step_size=0.1, n_steps=60, p_thresh=0.05, rule="newton", init_noise=0.0)
    nres = newton.traverse(src, tgt)
    torch.testing.assert_close(nres.path[0], src)
    ndrop = nres.source_confidence.unsqueeze(0) - nres.confidences
    assert float(ndrop.abs().max()) < 0.05
    assert float(nres.distance_ratio().median()) < 0.9
    # a tighter threshold: no accepted iterate drops by p_thresh or more
    strict = LevelSetTraversal(model, step_size=0.1, n_steps=30, p_thresh=0.01, init_noise=0.0).traverse(src, tgt)
    assert float((strict.source_confidence - strict.confidences).max()) < 0.01


def _reference_lst(model, src, tgt, cls, eta, n_steps, p_thresh, adv_step, start):
    """The paper's rule written out per sample, one pair at a time (float64), from the official algorithm."""
    out = []
    for i in range(src.shape[0]):
        x = start[i:i + 1].clone()
        y = torch.tensor([cls])
        with torch.no_grad():
            p0 = torch.softmax(model(src[i:i + 1]), dim=1)[0, cls]
        delta = torch.zeros_like(x)
        path = [x]
        for _ in range(n_steps):
            xr = x.clone().requires_grad_(True)
            (j,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
            v = tgt[i:i + 1] - x
            jf, vf = j.flatten(), v.flatten()
            null = (vf - (jf @ vf) / (jf @ jf) * jf).view_as(x)
            if adv_step > 0:
                delta = torch.clamp(delta + adv_step / 2 * j, -adv_step, adv_step)
            new = torch.clamp(x + eta * null - delta, 0.0, 1.0)
            with torch.no_grad():
                p_new = torch.softmax(model(new), dim=1)[0, cls]
            if p0 - p_new < p_thresh:
                x = new.detach()
            path.append(x)
        out.append(torch.cat(path))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("adv_step,p_thresh", [(0.0, 0.02), (0.002, 0.01)])
def test_paper_rule_matches_a_per_sample_reference(adv_step, p_thresh):
    model = _model(1).double()
    src, tgt, cls = _pairs(model.float(), n=5, seed=2)
    model = model.double()
    src, tgt = src.double(), tgt.double()
    kwargs = dict(step_size=0.2, n_steps=25, p_thresh=p_thresh, adv_step=adv_step, seed=4)
    res = LevelSetTraversal(model, **kwargs).traverse(src, tgt, source_class=cls)
    ref = _reference_lst(model, src, tgt, cls, 0.2, 25, p_thresh, adv_step, res.path[0])
    torch.testing.assert_close(res.path, ref, atol=1e-10, rtol=1e-10)
    # the threshold is tight enough that both accepted and rejected proposals occur
    assert bool((res.acceptance_rate > 0).any()) and bool((res.acceptance_rate < 1).any())
    moved = (res.path[1:] != res.path[:-1]).flatten(2).any(dim=2)
    if adv_step > 0:  # with the drift a rejected sample can move again later (the drift keeps changing)
        assert any(bool((~moved[:, i]).any()) and bool(moved[int((~moved[:, i]).float().argmax()):, i].any())
                   for i in range(src.shape[0]))
    else:  # without the drift a rejected sample proposes the same step again: it stays frozen
        first_stop = (~moved).float().argmax(dim=0)
        for i in range(src.shape[0]):
            if not bool(moved[:, i].all()):
                assert not bool(moved[int(first_stop[i]):, i].any())


def test_drift_is_the_clipped_accumulated_ce_gradient():
    model = _model(2).double()
    src = torch.rand(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    tgt = torch.rand(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    a = 0.05
    res = LevelSetTraversal(model, step_size=0.1, n_steps=1, p_thresh=1.0, adv_step=a, clip=None,
                            init_noise=0.0).traverse(src, tgt, source_class=0)
    x = src.clone().requires_grad_(True)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(model(x), torch.zeros(3, dtype=torch.long), reduction="sum"), x)
    v = tgt - src
    perp = v - ((v * g_ce).sum(1, keepdim=True) / (g_ce * g_ce).sum(1, keepdim=True)) * g_ce
    expected = src + 0.1 * perp - torch.clamp(a / 2 * g_ce, -a, a)
    torch.testing.assert_close(res.path[1], expected)
    # the drift raises the confidence relative to the drift-free step
    plain = LevelSetTraversal(model, step_size=0.1, n_steps=1, p_thresh=1.0, clip=None,
                              init_noise=0.0).traverse(src, tgt, source_class=0)
    assert bool((res.confidences[1] > plain.confidences[1]).all())


def test_init_noise_is_uniform_in_the_official_band():
    model = _model(0)
    src = torch.full((400, 12), 0.5)
    res = LevelSetTraversal(model, n_steps=1, seed=9).traverse(src, torch.rand(400, 12), source_class=0)
    u = (res.path[0] - src).flatten()
    assert float(u.abs().max()) <= 2 / 255 + 1e-7
    # U(-b, b): mean 0, variance b^2 / 3 (4800 draws)
    b = 2 / 255
    assert abs(float(u.mean())) < 4 * b / math.sqrt(3 * u.numel())
    assert float(u.var()) == pytest.approx(b * b / 3, rel=0.06)
    again = LevelSetTraversal(model, n_steps=1, seed=9).traverse(src, torch.rand(400, 12), source_class=0)
    torch.testing.assert_close(again.path[0], res.path[0])
    edge = LevelSetTraversal(model, n_steps=1).traverse(torch.zeros(4, 12), torch.rand(4, 12), source_class=0)
    assert float(edge.path[0].min()) >= 0.0  # clipped to the data range


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
    with pytest.raises(ValueError, match="rule"):
        LevelSetTraversal(model, rule="official")
    with pytest.raises(ValueError, match="adv_step"):
        LevelSetTraversal(model, adv_step=-0.1)
    with pytest.raises(ValueError, match="adv_step"):
        LevelSetTraversal(model, rule="newton", adv_step=0.01)


@settings(max_examples=60, deadline=None)
@given(step=st.floats(-2, 2) | st.just(math.nan), p=st.floats(-1, 2) | st.just(math.nan),
       adv=st.floats(-1, 1) | st.sampled_from([math.nan, math.inf]), noise=st.floats(-1, 1) | st.just(math.nan))
def test_constructor_accepts_exactly_the_valid_settings(step, p, adv, noise):
    valid = (0 < step <= 1) and (0 < p <= 1) and (0 <= adv < math.inf) and (0 <= noise < math.inf)
    if valid:
        lst = LevelSetTraversal(_model(), step_size=step, p_thresh=p, adv_step=adv, init_noise=noise)
        assert (lst.step_size, lst.p_thresh, lst.adv_step) == (step, p, adv)
    else:
        with pytest.raises(ValueError):
            LevelSetTraversal(_model(), step_size=step, p_thresh=p, adv_step=adv, init_noise=noise)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), seed=st.integers(0, 2**16), eta=st.floats(0.01, 1.0), p=st.floats(0.001, 1.0))
def test_accepted_iterates_never_break_the_threshold(n, seed, eta, p):
    model = _model(1)
    g = torch.Generator().manual_seed(seed)
    src, tgt = torch.rand(n, 12, generator=g), torch.rand(n, 12, generator=g)
    res = LevelSetTraversal(model, step_size=eta, n_steps=5, p_thresh=p, seed=seed % 1000).traverse(src, tgt)
    moved = (res.path[1:] != res.path[:-1]).any(dim=2)
    drop = res.source_confidence.unsqueeze(0) - res.confidences[1:]
    assert bool((drop[moved] < p).all())
    assert bool(torch.isfinite(res.path).all()) and float(res.path.min()) >= 0 and float(res.path.max()) <= 1


def test_first_traversal_step_is_orthogonal_to_the_confidence_gradient():
    model = _model(2).double()
    src = torch.rand(4, 12, dtype=torch.float64)
    tgt = torch.rand(4, 12, dtype=torch.float64)
    res = LevelSetTraversal(model, step_size=0.3, n_steps=1, p_thresh=1.0, clip=None, init_noise=0.0).traverse(
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
    {"step_size": 0.3, "init_noise": 0.0},
    {"step_size": 0.3, "adv_step": 0.01, "init_noise": 0.02, "seed": 3},
    {"step_size": 0.3, "rule": "newton", "correction_steps": 0, "init_noise": 0.0},
    {"step_size": 1.0, "rule": "newton", "correction_steps": 1, "init_noise": 0.02, "seed": 3},
])
def test_chunked_traversal_matches_unchunked(kwargs):
    model = _model(1).double()
    g = torch.Generator().manual_seed(1)
    src = torch.rand(5, 1, 3, 4, generator=g, dtype=torch.float64)
    tgt = torch.rand(5, 1, 3, 4, generator=g, dtype=torch.float64)
    common = dict(n_steps=25, p_thresh=0.003, n_interp=7, **kwargs)
    whole = LevelSetTraversal(model, chunk_size=None, **common).traverse(src, tgt)
    # some proposals are rejected, so the per-sample acceptance (and the Newton step-size adaptation) is exercised
    assert bool((whole.acceptance_rate < 1).any())
    for cs in (1, 2, 4, 5, 100):
        part = LevelSetTraversal(model, chunk_size=cs, **common).traverse(src, tgt)
        for name in _FIELDS:
            torch.testing.assert_close(getattr(part, name), getattr(whole, name), atol=1e-6, rtol=1e-6,
                                       msg=lambda m, name=name, cs=cs: f"{name} (chunk_size={cs}): {m}")
    if kwargs["init_noise"] == 0:  # without the batch-wide noise draw, each pair alone gives the same traversal
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
