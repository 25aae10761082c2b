import math

from gradlab.claims.inline import run_claim_inline


def test_adaptive_batch_efficiency_smoke():
    ev = run_claim_inline("adadagrad/adaptive_batch_efficiency", scale="smoke")
    for key in ("target_loss", "adagrad_small_steps", "adagrad_large_samples", "adagrad_adaptive_steps",
                "adagrad_adaptive_samples", "adagradnorm_adaptive_final_batch"):
        assert key in ev.metrics
    assert math.isfinite(ev.metrics["target_loss"]) and ev.metrics["target_loss"] > ev.metrics["optimum_loss"]
    assert "adaptive_batch" in ev.figures
    assert isinstance(ev.passed, bool)
