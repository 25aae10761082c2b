import math

from gradlab.claims.inline import run_claim_inline


def test_mup_coordinate_check_smoke():
    ev = run_claim_inline("mup/coordinate_check", scale="smoke")
    slopes = {k: v for k, v in ev.metrics.items() if k.startswith("slope_")}
    assert len(slopes) == 12 and all(math.isfinite(v) for v in slopes.values())
    assert "coordinate_check" in ev.figures


def test_mup_lr_transfer_smoke():
    ev = run_claim_inline("mup/lr_transfer", scale="smoke")
    m = ev.metrics
    assert math.isfinite(m["best_lr_shift_octaves_mup"]) and math.isfinite(m["best_lr_shift_octaves_sp"])
    assert m["seeds"] == 2 and len(m["shift_mup_per_seed"]) == len(m["shift_sp_per_seed"]) == 2
    assert all(len(row["best_lrs_mup"]) == len(m["widths"]) for row in m["per_seed"])
    # the verdict is the CI rule of the criterion, recomputed from the reported intervals
    expected = m["shift_mup_ci"]["high"] <= 1.0 and m["shift_sp_ci"]["low"] >= 2.0
    assert ev.passed == expected
    assert m["shift_mup_ci"]["low"] <= m["best_lr_shift_octaves_mup"] <= m["shift_mup_ci"]["high"]
    assert len(ev.headline) == 2 and "lr_sweeps" in ev.figures
