import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline


def test_discretisation_smoke():
    ev = run_claim_inline("nns-to-nos/discretisation", scale="smoke")
    check_evidence(ev, required_metrics=("err_plain_CNN", "err_converted_CNN", "err_FNO",
                                        "err_input_output_interpolation", "ratio_ci_FNO", "ratio_ci_plain_CNN",
                                        "ratio_ci_converted_CNN", "mean_predictor_err_64"))
    m = ev.metrics
    assert m["resolutions"] == [32, 64, 128, 256, 512]
    assert all(len(m[k]) == 5 for k in ("err_plain_CNN", "err_converted_CNN", "err_FNO"))
    # converted CNN and input-output interpolation are the plain CNN at the training resolution
    assert abs(m["err_converted_CNN"][1] - m["err_plain_CNN"][1]) < 1e-6
    assert abs(m["err_input_output_interpolation"][1] - m["err_plain_CNN"][1]) < 1e-6
    assert isinstance(ev.passed, bool)


@pytest.mark.slow
def test_quick_scale():
    ev = run_claim_inline("nns-to-nos/discretisation", scale="quick")
    assert isinstance(ev.passed, bool)
