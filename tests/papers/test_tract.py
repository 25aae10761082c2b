"""Smoke test of the TrAct claim and checks of its helpers."""

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.tract import epochs_to_target, make_model
from gradlab.training import TrAct


def test_epochs_to_target_censors_at_epochs_plus_one():
    assert epochs_to_target([0.5, 0.91, 0.95]) == 2
    assert epochs_to_target([0.9]) == 1
    assert epochs_to_target([0.5, 0.6]) == 3


def test_plain_and_tract_models_start_from_the_same_weights():
    plain, tract = make_model(False, 3), make_model(True, 3)
    assert isinstance(tract[0], TrAct) and not isinstance(plain[0], TrAct)
    for a, b in zip(plain.parameters(), tract.parameters()):
        assert a.shape == b.shape and bool((a == b).all())


def test_claim_smoke():
    ev = run_claim_inline("tract/digits_contrast", scale="smoke")
    check_evidence(ev, required_metrics=("speedup_epochs_to_90_at_0.1", "final_acc_tract_minus_plain_c0.03",
                                         "accuracy_gain_0.03_minus_gain_0.1", "adam_tract_c0.1_final_acc_mean",
                                         "plain_first_lr_x10_c0.03_final_acc_mean"))
    assert ev.criterion and ev.headline and ev.verdict in ("passed", "failed", "inconclusive")
