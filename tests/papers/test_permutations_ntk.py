import math

from gradlab.claims.inline import run_claim_inline
from gradlab.papers.permutations_ntk import _non_increasing


def test_permutations_ntk_smoke():
    ev = run_claim_inline("permutations-ntk/ensemble_recovers_permutation", scale="smoke")
    m = ev.metrics
    for key in ("exact_all_inputs_full_ensemble", "per_input_rate_single_net"):
        assert math.isfinite(m[key])
    assert len(m["per_input_rate"]) == len(m["theory_per_input_rate"]) == len(m["ensemble_sizes"])
    assert m["train_residual"] < 1e-4 and not ev.failed_preconditions
    assert ev.passed == (m["exact_all_inputs_full_ensemble"] == 1.0)
    assert "recovery" in ev.figures


def test_complexity_bounds_smoke_is_inconclusive_until_the_rounding_rule_is_known():
    ev = run_claim_inline("permutations-ntk/ensemble_complexity_bounds", scale="smoke")
    m = ev.metrics
    assert ev.verdict == "inconclusive" and len(ev.failed_preconditions) == 1
    for tag in ("threshold0", "threshold0.001"):
        r_single, r_all = m[f"M_single_over_klogk_{tag}"], m[f"M_all_over_k2_{tag}"]
        assert len(r_single) == len(r_all) == len(m["ks"])
        # the ratios are M / (k log k) and M / k^2 of the reported ensemble sizes
        for kk, ms, ma, rs, ra in zip(m["ks"], m[f"M_single_{tag}"], m[f"M_all_{tag}"], r_single, r_all):
            assert math.isclose(rs, ms / (kk * math.log(kk))) and math.isclose(ra, ma / kk**2)
            assert ma >= ms >= 1  # all inputs at once need at least as many members as the worst single one
        assert m[f"all_bound_holds_{tag}"] == _non_increasing(r_all[-3:])
    assert ev.passed == all(m[f"{p}_bound_holds_{t}"] for p in ("single", "all") for t in ("threshold0", "threshold0.001"))


def test_non_increasing():
    assert _non_increasing([3.0, 2.0, 2.0]) and not _non_increasing([1.0, 1.5, 1.2]) and _non_increasing([1.0])
