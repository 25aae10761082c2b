import math

from gradlab.claims.inline import run_claim_inline


def test_grokking_xor_smoke():
    ev = run_claim_inline("grokking-xor/one_step_overfit_then_grok", scale="smoke")
    for key in ("train_acc_step1", "clean_test_acc_step1", "train_acc_final", "clean_test_acc_final"):
        assert math.isfinite(ev.metrics[key]) and 0 <= ev.metrics[key] <= 1
    assert "accuracy_vs_step" in ev.figures and ev.criterion
