import math

import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline


def test_fewer_iterations_smoke():
    ev = run_claim_inline("dcdm/fewer_iterations", scale="smoke")
    check_evidence(ev, required_metrics=("worst_dcdm_over_cg", "worst_dcdm_over_ic0_small", "its_dcdm_16",
                                         "its_cg_16", "its_ic0_16", "its_amg_32", "dcdm_true_rel_residual_32"))
    m = ev.metrics
    n_rhs = 2 * m["draws_per_kind"]
    assert all(len(m[f"its_{k}_{n}"]) == n_rhs for k in ("dcdm", "cg", "ic0", "amg") for n in m["sizes"])
    # the preconditioned baselines beat plain CG, as they must on the Poisson problem
    assert all(a < c for a, c in zip(m["its_ic0_32"], m["its_cg_32"]))
    assert all(a < c for a, c in zip(m["its_amg_32"], m["its_cg_32"]))
    assert math.isclose(m["worst_dcdm_over_cg"], max(m["dcdm_over_cg_16"] + m["dcdm_over_cg_32"]))
    assert ev.passed == (m["dcdm_all_converged"] and m["worst_dcdm_over_cg"] <= 0.4
                         and m["worst_dcdm_over_ic0_small"] < 1.0)
    assert "iterations" in ev.figures


def test_size_independent_smoke():
    ev = run_claim_inline("dcdm/size_independent", scale="smoke")
    check_evidence(ev, required_metrics=("dcdm_growth", "cg_growth", "worst_dcdm_over_cg_obstacle",
                                         "its_dcdm_obstacle", "its_cg_obstacle"))
    m = ev.metrics
    assert m["obstacle_solid_cells"] > 0 and m["obstacle_fluid_cells"] + m["obstacle_solid_cells"] == 16 * 16
    assert m["cg_growth"] > 1.0  # CG's iterations grow with the grid
    assert math.isclose(m["dcdm_growth"], max(m["its_dcdm_32"]) / max(m["its_dcdm_16"]))
    assert ev.passed == (m["dcdm_converged_largest"] and m["dcdm_growth"] <= 1.5 and m["dcdm_converged_obstacle"]
                         and m["worst_dcdm_over_cg_obstacle"] <= 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fewer_iterations", "size_independent"])
def test_quick_scale(name):
    ev = run_claim_inline(f"dcdm/{name}", scale="quick")
    check_evidence(ev)
