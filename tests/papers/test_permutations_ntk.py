import math

from gradlab.claims.inline import run_claim_inline


def test_permutations_ntk_smoke():
    ev = run_claim_inline("permutations-ntk/ensemble_recovers_permutation", scale="smoke")
    m = ev.metrics
    for key in ("exact_all_inputs_full_ensemble", "per_input_rate_single_net", "slope_single", "slope_all"):
        assert math.isfinite(m[key])
    assert len(m["per_input_rate"]) == len(m["theory_per_input_rate"]) == len(m["ensemble_sizes"])
    assert m["train_residual"] < 1e-4
    assert "recovery_and_complexity" in ev.figures
