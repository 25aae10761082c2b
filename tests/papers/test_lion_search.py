import math

from gradlab.claims.inline import run_claim_inline


def test_program_search_claim_smoke():
    ev = run_claim_inline("lion/program_search_beats_sgd_momentum", scale="smoke")
    m = ev.metrics
    for key in ("funnel_loss_ratios", "heldout_loss_ratio", "sgdm_losses", "best_program", "programs_proposed"):
        assert key in m
    assert m["programs_proposed"] == m["programs_evaluated"] + m["duplicates_skipped"]
    assert all(math.isfinite(v) for v in m["sgdm_losses"])
    assert math.isfinite(m["heldout_loss_ratio"])
    assert "def update(w, g, m, v, lr):" in m["best_program"]
    assert "program_search" in ev.figures
    assert isinstance(ev.passed, bool)
