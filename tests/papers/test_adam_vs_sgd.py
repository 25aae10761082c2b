"""Smoke test of the Adam-vs-SGD sharpness claim and checks of its data and model."""

import math

import torch

from gradlab.claims.inline import run_claim_inline
from gradlab.papers.adam_vs_sgd import CONTEXT, VOCAB, TinyCausalLM, ZipfMarkovTokens


def test_zipf_tokens_are_heavy_tailed_and_shifted():
    data = ZipfMarkovTokens(0)
    x, y = data.sample(512, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (512, CONTEXT) and torch.equal(x[:, 1:], y[:, :-1])
    counts = torch.bincount(y.reshape(-1), minlength=VOCAB).sort(descending=True).values.float()
    assert counts[:6].sum() > 0.3 * counts.sum()  # a few tokens dominate
    torch.testing.assert_close(data.transition.sum(1), torch.ones(VOCAB))
    # the Bayes floor equals a Monte-Carlo estimate of the true conditionals' cross-entropy
    x, y = data.sample(4000, torch.Generator().manual_seed(1))
    mc = -data.transition[x, y].log().mean().item()
    assert abs(mc - data.bayes_loss()) < 0.03


def test_model_is_causal():
    torch.manual_seed(0)
    model = TinyCausalLM()
    x = torch.randint(0, VOCAB, (2, CONTEXT))
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % VOCAB
    torch.testing.assert_close(model(x)[:, :-1], model(x2)[:, :-1])


def test_claim_smoke():
    ev = run_claim_inline("adam-vs-sgd/sharpness_and_clipping", scale="smoke")
    m = ev.metrics
    for key in ("step6_SGD_sharpness", "step6_Adam_sharpness", "step6_SGD_clip10_sharpness"):
        assert math.isfinite(m[key]), key
    assert m["seeds"] == 2 and len(m["step6_sgd_over_adam_sharpness"]) == 2
    assert len(m["sgd_best_loss"]) == len(m["sgd_clip_best_loss"]) == 2
    assert all(math.isfinite(v) for v in m["sgd_best_loss"] + m["sgd_clip_best_loss"])
    # the training part is decided on the paired CI of the per-seed loss differences
    diffs = [a - b for a, b in zip(m["sgd_best_loss"], m["sgd_clip_best_loss"])]
    assert math.isclose(m["sgd_minus_clip_loss_ci"]["mean"], sum(diffs) / len(diffs), rel_tol=1e-9, abs_tol=1e-12)
    assert m["sgd_clip_trains_faster"] == (float(m["sgd_minus_clip_loss_ci"]["low"]) > 0)
    assert ev.passed == (m["sgd_3x_sharper_than_adam"] and m["clip_cuts_sharpness_2x"] and m["clip_raises_reduction"]
                         and m["sgd_clip_trains_faster"])
    assert "sharpness_and_training" in ev.figures and ev.criterion and len(ev.headline) == 3


def test_train_sgd_diverged_run_records_inf_for_every_evaluation():
    """A diverging lr stops early but reports the same curve length (every later evaluation inf)."""
    from gradlab.papers.adam_vs_sgd import train_sgd

    data = ZipfMarkovTokens(0)
    held = data.sample(16, torch.Generator().manual_seed(5))
    ok = train_sgd(0.3, False, 12, 8, 0, data, held, eval_every=5)
    bad = train_sgd(1e6, False, 12, 8, 0, data, held, eval_every=5)
    assert len(ok) == len(bad) == 4  # steps 0, 5, 10 and the last step 12
    assert all(math.isfinite(v) for v in ok) and bad[-1] == float("inf")
