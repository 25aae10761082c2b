import math

from gradlab.claims.inline import run_claim_inline


def _numbers(ev):
    return {k: v for k, v in ev.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_logistic_kkt_local_rate_smoke():
    ev = run_claim_inline("auglag-sketch/logistic_kkt_local_rate", scale="smoke")
    assert isinstance(ev.passed, bool) and ev.criterion
    for solver in ("gaussian", "kaczmarz", "gaussian_kappa1", "gaussian_kappa1_theta_to_0", "exact"):
        for key in ("iters_to_kkt_1e-6", "final_kkt", "x_err", "lam_err", "unit_steps_last3", "sketch_iters_total"):
            assert f"{solver}_{key}" in ev.metrics
    assert all(math.isfinite(v) for v in _numbers(ev).values()), ev.metrics
    assert ev.metrics["exact_sketch_iters_total"] == 0 and ev.metrics["gaussian_sketch_iters_total"] > 0
    # precondition: the adaptive accuracy rule was exercised (at most half of the solves stopped at the cap)
    for solver in ("gaussian", "kaczmarz"):
        frac = ev.metrics[f"{solver}_sketch_capped_iters"] / ev.metrics[f"{solver}_n_iter"]
        assert ev.metrics[f"{solver}_capped_fraction"] == frac
        (check,) = [c for c in ev.preconditions.values() if c.label == f"{solver} capped fraction"]
        assert check.value == frac and check.bound == 0.5 and check.ok == (frac <= 0.5)
    assert ev.verdict == ("inconclusive" if ev.failed_preconditions else "passed" if ev.passed else "failed")
    assert set(ev.figure_pngs()) == {"kkt_and_steps"}


def test_hs_known_optima_smoke():
    ev = run_claim_inline("auglag-sketch/hs_known_optima", scale="smoke")
    assert isinstance(ev.passed, bool) and ev.criterion
    for name in ("hs028", "hs040"):
        for key in ("x_err", "f_err", "kkt", "iters", "regular", "ok"):
            assert f"{name}_{key}" in ev.metrics
    assert ev.metrics["n_regular"] == 2
    capped = sum(ev.metrics[f"{n}_sketch_capped_iters"] for n in ("hs028", "hs040"))
    iters = sum(ev.metrics[f"{n}_iters"] for n in ("hs028", "hs040"))
    assert ev.metrics["regular_capped_fraction"] == capped / iters
    assert all(math.isfinite(v) for v in _numbers(ev).values()), ev.metrics
    assert set(ev.figure_pngs()) == {"hs_kkt"}
