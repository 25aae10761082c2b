import math

import pytest

from gradlab.claims.inline import run_claim_inline


def test_softmax_iterations_smoke():
    ev = run_claim_inline("gn-smoothness/softmax_iterations", scale="smoke")
    m = ev.metrics
    for key in ("iters_exact", "iters_weighted_gn", "iters_gradient"):
        assert isinstance(m[key], int) and m[key] >= 1
    assert all(m[f"iters_{k}"] == max(v) for k, v in (("exact", m["per_problem"]["exact"]),
                                                      ("weighted_gn", m["per_problem"]["weighted_gn"]),
                                                      ("gradient", m["per_problem"]["gradient"])))
    assert "convergence" in ev.figures and isinstance(ev.passed, bool)


def test_logistic_approximation_quality_smoke():
    ev = run_claim_inline("gn-smoothness/logistic_approximation_quality", scale="smoke")
    m = ev.metrics
    kappa = m["relative_condition_number"]
    assert set(m["final_gap"]) == set(kappa) == {"exact", "fisher", "fixed_bound", "gradient"}
    assert all(math.isfinite(v) and v >= 0 for v in m["final_gap"].values())
    assert kappa["exact"] == pytest.approx(1.0) and kappa["gradient"] == "inf"
    # the bound X^T X / 4n is exact at w0 = 0 (sigmoid'(0) = 1/4) and an upper bound elsewhere
    assert m["relative_condition_number_path"]["fixed_bound"][0] == pytest.approx(1.0)
    assert kappa["fixed_bound"] >= 1.0 and kappa["fisher"] >= 1.0
    # the verdict is the pairwise rule recomputed from the metrics
    k = {n: float(v) for n, v in kappa.items()}
    gaps = m["final_gap"]
    expected = not any(k[a] < k[b] and gaps[a] > gaps[b] for a in k for b in k)
    assert ev.passed == expected and len(m["ordering_violations"]) == (0 if expected else len(m["ordering_violations"]))
    assert "convergence" in ev.figures and isinstance(ev.passed, bool)


def test_relative_condition_number_against_closed_form():
    """beta/alpha of H w.r.t. a PD matrix: scaled copies give 1, a diagonal pair gives max/min ratio, H = 0 gives inf."""
    import torch

    from gradlab.papers.gn_smoothness import relative_condition_number

    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    hess = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    assert relative_condition_number(3.0 * hess, hess) == pytest.approx(1.0)
    d1 = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    d2 = torch.diag(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    assert relative_condition_number(d1, d2) == pytest.approx(4.0 / 0.5)  # ratios 0.5, 2, 4
    assert relative_condition_number(torch.zeros(3, 3, dtype=torch.float64), d2) == math.inf


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax_iterations", "logistic_approximation_quality"])
def test_quick_scale(name):
    ev = run_claim_inline(f"gn-smoothness/{name}", scale="quick")
    assert isinstance(ev.passed, bool)
