"""Smoke tests of the AlignIT claims (tiny model at smoke scale)."""

import torch

from gradlab.claims.inline import check_evidence, run_claim_inline

torch.set_num_threads(1)


def test_kv_exactness_smoke():
    ev = run_claim_inline("alignit/kv_exactness", scale="smoke")
    check_evidence(ev, required_metrics=("mismatches", "max_abs_diff", "customised_non_concept_key_drift"))
    assert ev.criterion and ev.headline and ev.verdict == "passed"  # exactness holds at any scale
    assert ev.metrics["mismatches"] == {"non_concept": 0, "concept": 0, "uncond": 0}
    assert ev.metrics["calls_per_layer"] == [ev.metrics["steps"]] * ev.metrics["layers"]


def test_prompt_alignment_smoke():
    ev = run_claim_inline("alignit/prompt_alignment", scale="smoke")
    check_evidence(ev, required_metrics=("square_acc_customised", "square_acc_alignit", "square_acc_gain",
                                         "colour_drop", "concept_colour_rate_training_prompt"))
    assert ev.criterion and ev.headline and ev.verdict in ("passed", "failed", "inconclusive")
    assert 0.0 <= ev.metrics["square_acc_alignit"] <= 1.0
