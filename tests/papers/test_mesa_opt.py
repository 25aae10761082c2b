import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline

CLAIM = "mesa-opt/ar_lsa_learns_one_gd_step"


def test_smoke_evidence_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    check_evidence(ev)
    assert isinstance(ev.passed, bool) and ev.criterion
    m = ev.metrics
    for name in ("gaussian", "sparse"):
        assert m[f"{name}_c_T_ci_low"] <= m[f"{name}_c_T"] <= m[f"{name}_c_T_ci_high"]
        assert m[f"{name}_c_T_ci_high"] - m[f"{name}_c_T_ci_low"] < 1.0
    assert len(ev.headline) == 3 and not ev.preconditions


def test_ratio_ci_matches_closed_form_on_exact_data():
    """c_T is a ratio of sums: exact proportional data gives the factor and a degenerate interval around it."""
    import numpy as np

    from gradlab.papers.mesa_opt import _ratio_ci

    den = np.random.default_rng(0).uniform(0.5, 2.0, size=200)
    est, lo, hi = _ratio_ci(0.2 * den, den, seed=0)
    assert abs(est - 0.2) < 1e-12 and lo <= est + 1e-12 and hi >= est - 1e-12 and hi - lo < 1e-9
    noisy = 0.2 * den + np.random.default_rng(1).normal(0, 0.05, size=200)
    est, lo, hi = _ratio_ci(noisy, den, seed=0)
    assert lo < est < hi and 0.18 < lo and hi < 0.22


@pytest.mark.slow
def test_quick_scale_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert isinstance(ev.passed, bool)
