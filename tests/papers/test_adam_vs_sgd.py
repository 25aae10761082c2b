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
    for key in ("step6_SGD_sharpness", "step6_Adam_sharpness", "step6_SGD_clip10_sharpness",
                "step6_sgd_over_adam_sharpness", "sgd_best_loss", "sgd_clip_best_loss"):
        assert math.isfinite(ev.metrics[key]), key
    assert "sharpness_and_training" in ev.figures and ev.criterion
