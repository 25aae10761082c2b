"""Smoke test of the OReX claim (code path only; smoke-scale numbers are not evidence)."""

import math

from gradlab.claims.inline import check_evidence, run_claim_inline


def test_claim_smoke():
    ev = run_claim_inline("orex/cross_sections", scale="smoke")
    check_evidence(ev, required_metrics=("torus_iou_mean", "torus_iou_minus_nearest_ci",
                                         "ripple_no_hinge_minus_hinge_ci", "orex_iou", "no_hinge_ripple",
                                         "one_iteration_iou", "orex_spheres_iou", "orex_oblique_iou", "baselines"))
    assert set(ev.figures) == {"reconstructions", "metrics"}
    assert ev.verdict in ("passed", "failed", "inconclusive")
    assert set(ev.preconditions) == {"fields fit the slices", "hinge exercised", "every field has a surface"}
    b = ev.metrics["baselines"]["torus"]
    assert 0 < b["nearest_iou"] <= 1 and 0 < b["sdf_interp_iou"] <= 1
    assert all(0 <= v <= 1 for v in ev.metrics["orex_iou"]) and len(ev.metrics["orex_iou"]) == 2
    assert "sdf_interp_iou" not in ev.metrics["baselines"]["torus_oblique"]  # parallel slices only
    assert "ripple" in ev.criterion and math.isfinite(ev.headline[0].value)
