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
    assert len(m["best_lrs_mup"]) == len(m["widths"])
    assert "lr_sweeps" in ev.figures
