import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline


def test_vcycle_smoke():
    ev = run_claim_inline("mgno/vcycle", scale="smoke")
    check_evidence(ev, required_metrics=("rho_v20", "rho_v22", "spread_v20", "spread_v22",
                                        "max_rel_diff_vs_sparse_vcycle"))
    m = ev.metrics
    assert len(m["rho_v20"]) == len(m["sizes"]) and all(0 < r < 1 for r in m["rho_v20"] + m["rho_v22"])
    assert m["max_rel_diff_vs_sparse_vcycle"] <= 1e-10  # the structural equivalence holds at every scale
    assert ev.verdict in ("passed", "failed")


def test_vs_fno_smoke():
    ev = run_claim_inline("mgno/vs_fno", scale="smoke")
    check_evidence(ev, required_metrics=("mgno_test_1d", "fno_test_1d", "mgno_test_2d", "fno_test_2d",
                                        "diff_ci_1d", "diff_ci_2d", "mgno_params_1d", "fno_params_1d"))
    m = ev.metrics
    assert len(m["mgno_test_1d"]) == len(m["fno_test_1d"]) == 2
    assert m["mgno_params_2d"] > 0 and m["fno_width_2d"] >= 4
    assert isinstance(ev.passed, bool) and ev.verdict in ("passed", "failed", "inconclusive")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vcycle", "vs_fno"])
def test_quick_scale(name):
    ev = run_claim_inline(f"mgno/{name}", scale="quick")
    assert isinstance(ev.passed, bool)
