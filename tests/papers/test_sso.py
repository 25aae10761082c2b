"""Smoke test of the SSO claim and checks of its helpers."""

import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.sso import train


def test_sso_with_one_inner_step_reproduces_sgd_curve():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 64, generator=g), torch.randint(0, 10, (128,), generator=g)
    a = train("mlp", x, y, seed=1, steps=6, lr=0.3, method="sgd", eval_every=2)
    b = train("mlp", x, y, seed=1, steps=6, lr=0.3, method="sso", eta=5.0, inner_steps=1, eval_every=2)
    c = train("mlp", x, y, seed=1, steps=6, lr=0.3, method="sso", eta=5.0, inner_steps=4, eval_every=2)
    assert a == b and len(a) == 4 and a[-1] < a[0]
    assert c != a


def test_claim_smoke():
    ev = run_claim_inline("sso/digits_inner_steps", scale="smoke")
    check_evidence(ev, required_metrics=("linear_sso_over_sgd_ratio", "mlp_sso_over_sgd_ratio",
                                         "m1_vs_sgd_max_abs_loss_diff", "mlp_safe_eta_best_final_loss"))
    assert ev.criterion and ev.headline and ev.verdict in ("passed", "failed", "inconclusive")
    assert ev.metrics["m1_vs_sgd_max_abs_loss_diff"] == 0.0
