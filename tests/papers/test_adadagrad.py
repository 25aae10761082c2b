import math

from gradlab.claims.inline import run_claim_inline
from gradlab.papers.adadagrad import ADAPTIVE, ETA


def test_adaptive_batch_efficiency_smoke():
    ev = run_claim_inline("adadagrad/adaptive_batch_efficiency", scale="smoke")
    m = ev.metrics
    assert m["seeds"] == 2 and ETA == 0.1 and m["eta"] == ETA
    assert all(math.isfinite(t) and t > o for t, o in zip(m["target_loss"], m["optimum_loss"]))
    for name in ADAPTIVE:  # the scalar variant and the coordinate-wise test are in the verdict
        for key in ("steps", "samples", "log_step_ratio_vs_small_ci", "log_sample_ratio_vs_large_ci", "passes"):
            assert f"{name}_{key}" in m, (name, key)
        assert all(b >= 8 for b in m[f"{name}_final_batch"])
    expected = all(m[f"{name}_passes"] for name in ADAPTIVE)
    assert ev.passed == expected
    for name in ADAPTIVE:  # each method's verdict is the CI rule recomputed from the metrics
        ok = (m[f"{name}_reached_all_seeds"] and m[f"{name}_log_step_ratio_vs_small_ci"]["low"] > 0
              and m[f"{name}_log_sample_ratio_vs_large_ci"]["low"] > 0)
        assert m[f"{name}_passes"] == ok
    assert len(ev.headline) == 3 and "adaptive_batch" in ev.figures
