"""Smoke test of the Lion-vs-AdamW claim (the program-search claim has its own tests)."""

import math

from gradlab.claims.inline import run_claim_inline
from gradlab.papers.lion import optimizer_state_bytes, warmup_cosine


def test_warmup_cosine_shape():
    f = warmup_cosine(100)
    assert f(0) == 0.1 and f(9) == 1.0 and abs(f(99)) < 1e-3 and 0.4 < f(55) < 0.6


def test_lion_vs_adamw_smoke():
    ev = run_claim_inline("lion/lion_vs_adamw", scale="smoke")
    for key in ("b16_adamw_loss", "b16_lion_loss", "b64_gap", "b64_lr_ratio", "state_bytes_ratio", "bayes_loss"):
        assert math.isfinite(ev.metrics[key]), key
    assert ev.metrics["lion_state_bytes"] < ev.metrics["adamw_state_bytes"]
    assert "lr_sweeps" in ev.figures and ev.criterion
