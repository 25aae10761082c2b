"""Smoke tests of the NeTI claims and checks of their helpers."""

import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.neti import synthetic_target, truncation_errors

torch.set_num_threads(1)


def test_synthetic_target_is_fixed_unit_and_layer_dependent():
    t, lyr = torch.tensor([0, 500, 500]), torch.tensor([3, 3, 4])
    y = synthetic_target(t, lyr)
    assert torch.equal(y, synthetic_target(t, lyr))
    torch.testing.assert_close(y.norm(dim=1), torch.ones(3))
    assert not torch.allclose(y[1], y[2]) and not torch.allclose(y[0], y[1])


def test_truncation_errors_of_a_perfect_and_a_zero_mapper():
    class Exact(torch.nn.Module):
        def forward(self, t, lyr, truncation_idx=None):
            return type("O", (), {"embedding": synthetic_target(t, lyr) * (truncation_idx > 0)})()

    errs = truncation_errors(Exact())
    assert errs == [0.0] * len(errs)


def test_nested_dropout_ordering_smoke():
    ev = run_claim_inline("neti/nested_dropout_ordering", scale="smoke")
    check_evidence(ev, required_metrics=("error_p05_mean", "error_p0_mean", "ratio_k16"))
    assert ev.criterion and ev.headline and ev.verdict in ("passed", "failed", "inconclusive")
    assert len(ev.metrics["error_p05_mean"]) == 7


def test_personalisation_smoke():
    ev = run_claim_inline("neti/personalisation", scale="smoke")
    check_evidence(ev, required_metrics=("heldout_loss_mean", "bypass_minus_mapper", "mapper_minus_ti",
                                         "heldout_loss_ti_init"))
    assert ev.criterion and ev.headline and ev.verdict in ("passed", "failed", "inconclusive")
    assert set(ev.metrics["heldout_loss_mean"]) == {"neti_bypass", "neti_mapper", "textual_inversion"}
