"""Exact Learning of Permutations for Nonzero Binary Inputs with Logarithmic Training Size and Quadratic Ensemble Complexity (arXiv 2502.16763).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, claim
from gradlab.dynamics.permutations import (
    TwoLayerNTKEnsemble,
    binary_inputs,
    exact_recovery_probability,
    exact_recovery_rate,
    fit_ensemble,
    ntk_gp_posterior,
    permutation_ensemble_complexity,
    permute_bits,
    relu_ntk,
    required_ensemble_size,
)

PAPER = Paper(
    key="permutations-ntk",
    title="Exact Learning of Permutations for Nonzero Binary Inputs with Logarithmic Training Size and Quadratic Ensemble Complexity",
    short_title="Exact learning of permutations",
    cluster="dynamics",
    arxiv="2502.16763",
    components=("gradlab.dynamics.permutations",),
    statement=("An ensemble of two-layer ReLU networks in the NTK regime, each trained by gradient descent on only "
               "the k standard basis vectors, learns any fixed permutation of k bits exactly on all 2^k - 1 nonzero "
               "binary inputs after averaging and rounding, with an ensemble size of O(k log k) for one input and "
               "O(k^2) for all inputs at once."),
    revisions=(
        Revision(
            claim="ensemble_recovers_permutation",
            date="2026-12-01",
            old=("the full trained ensemble recovers P x exactly on all 2^k - 1 inputs (exact_all_inputs_full_ensemble "
                 "== 1) and the log-log slope of the required ensemble size vs k is within 0.25 of k log k's (single "
                 "input) and of 2 (all inputs)"),
            new=("the full trained ensemble recovers P x exactly on all 2^k - 1 inputs (precondition: the nets fit "
                 "their training set, max residual <= 1e-4); the rate statements moved to the claim "
                 "ensemble_complexity_bounds, tested as upper bounds"),
            reason=("The paper's rates are upper bounds (O(k log k), O(k^2)), but the test was two-sided around the "
                    "exponent, and the slope swings from 1.0 to 2.6 with our own rounding threshold (1e-3), which is "
                    "not the paper's (issue 9, 2.5)."),
            old_result=("failed: exact_all_inputs_full_ensemble 1 (k = 6), slope_single 1.609 vs slope_klogk 1.391, "
                        "slope_all 1.716 (threshold 1e-3)"),
        ),
    ),
)

BOUND_KS = (4, 8, 16, 32, 64, 128)   # range of k for the closed-form ensemble complexity
TOP = 3                              # "top of the range": the ratios must not increase over the last TOP values of k
CANDIDATE_THRESHOLDS = (0.0, 1e-3)   # rounding rules we can justify; the paper's own rule is not established


@claim(
    paper=PAPER.key,
    title="An NTK ensemble trained on the k basis vectors recovers a permutation on all 2^k-1 inputs",
    timeouts={"quick": 900},
)
def ensemble_recovers_permutation(run: ClaimRun) -> Evidence:
    """A finite-width ensemble trained on the k basis vectors recovers P x on every nonzero binary input."""
    k = run.pick(smoke=3, quick=6)
    members = run.pick(smoke=64, quick=4096)
    width = run.pick(smoke=32, quick=512)
    # rounding: bit = 1 iff ensemble mean > 1e-3; the trained nets fit the training inputs' 0-bits only up to the
    # GD tolerance (1e-5), where the infinite-width mean is exactly 0, so a threshold of exactly 0 would be a coin flip
    delta, threshold, train_tol = 0.05, 1e-3, 1e-5
    gen = torch.Generator().manual_seed(run.seed)
    perm = torch.randperm(k, generator=gen)

    x_train = torch.eye(k)
    y_train = permute_bits(x_train, perm)
    x_test = binary_inputs(k, torch.float32)
    y_test = permute_bits(x_test, perm)
    lam_max = float(torch.linalg.eigvalsh(relu_ntk(x_train.double(), x_train.double())).max())
    ens = TwoLayerNTKEnsemble(members, k, width, k, generator=gen)
    run.progress(0.05, "training ensemble")
    resid = fit_ensemble(ens, x_train, y_train, lr=k / lam_max, steps=run.pick(smoke=200, quick=300), tol=train_tol)
    outputs = ens.predict(x_test)
    sizes = [m for m in (1, 4, 16, 64, 256, 1024, 4096, 16384) if m <= members]
    rates = exact_recovery_rate(outputs, y_test, sizes, threshold)
    coef, var = ntk_gp_posterior(x_train.double(), x_test.double())
    gp_mean = coef @ y_train.double()
    theory_per_input = [float(exact_recovery_probability(gp_mean, var, y_test, m, threshold).mean()) for m in sizes]
    theory_m_all = required_ensemble_size(gp_mean, var, y_test, delta, threshold, joint=True)
    full_exact_all = rates["all_inputs"][-1] == 1.0
    passed = bool(full_exact_all)
    metrics = {
        "k": k, "members": members, "width": width, "train_residual": resid,
        "exact_all_inputs_full_ensemble": float(rates["all_inputs"][-1]),
        "per_input_rate_full_ensemble": float(rates["per_input"][-1]),
        "per_input_rate_single_net": float(rates["per_input"][0]),
        "theory_M_all_inputs_at_k": theory_m_all, "threshold": threshold,
        "ensemble_sizes": sizes, "per_input_rate": rates["per_input"], "theory_per_input_rate": theory_per_input,
        "all_inputs_rate": rates["all_inputs"],
    }

    fig = Figure(figsize=(6, 4))
    ax1 = fig.subplots()
    ax1.semilogx(sizes, rates["per_input"], "o-", label="trained ensembles: per input")
    ax1.semilogx(sizes, rates["all_inputs"], "s-", label="trained ensembles: all inputs")
    ax1.semilogx(sizes, theory_per_input, "k--", label="NTK-GP theory: per input")
    ax1.set_xlabel("ensemble size M")
    ax1.set_ylabel("exact-recovery rate")
    ax1.set_title(f"k={k}, width {width}, {members} nets, threshold {threshold}")
    ax1.legend(fontsize=8)
    return Evidence(
        metrics=metrics,
        criterion=(
            "the full trained ensemble recovers P x exactly on all 2^k - 1 inputs (exact_all_inputs_full_ensemble == 1; "
            "rounding: bit = 1 iff ensemble mean > 1e-3)"
        ),
        passed=passed,
        preconditions={"every net fits its training set (NTK regime reached)":
                       Check("max training residual", resid, "<=", 1e-4)},
        headline=(Check("exact recovery on all inputs, full ensemble", float(rates["all_inputs"][-1]), ">=", 1.0),),
        figures={"recovery": fig},
        notes=(
            "Bias-free two-layer ReLU nets in NTK parameterisation, both layers trained by full-batch GD on the "
            "squared loss from the k basis vectors (to max residual 1e-5); rounding = (ensemble mean > 1e-3): the "
            "infinite-width mean is > 0 on 1-bits and <= 0 on 0-bits (exactly 0 at the training points, which the "
            "trained nets reach only up to the GD tolerance, so the threshold sits just above that noise). The dashed "
            "line is the closed-form NTK-GP prediction of the per-input rate. The ensemble-size rates are the claim "
            "ensemble_complexity_bounds."
        ),
    )


def _ratios(values: list[float], scale: list[float]) -> list[float]:
    return [v / c for v, c in zip(values, scale)]


def _non_increasing(xs: list[float]) -> bool:
    return all(b <= a for a, b in zip(xs, xs[1:]))


@claim(
    paper=PAPER.key,
    title="Ensemble complexity is at most O(k log k) for one input and O(k^2) for all inputs (closed-form NTK-GP)",
    timeouts={"quick": 600},
)
def ensemble_complexity_bounds(run: ClaimRun) -> Evidence:
    """The paper's rates are upper bounds: M(k)/(k log k) (single input) and M(k)/k^2 (all inputs) must not grow
    at the top of the range of k. Inconclusive while the paper's rounding rule is not established."""
    ks = list(run.pick(smoke=(4, 8, 16), quick=BOUND_KS))
    top = ks[-TOP:]
    delta = 0.05
    klogk = [kk * math.log(kk) for kk in ks]
    k2 = [float(kk**2) for kk in ks]
    metrics: dict[str, object] = {"ks": ks, "top_ks": top, "delta": delta}
    holds: dict[float, bool] = {}
    for t_i, th in enumerate(CANDIDATE_THRESHOLDS):
        run.progress(t_i / len(CANDIDATE_THRESHOLDS), f"closed-form ensemble complexity, threshold {th:g}")
        comp = [permutation_ensemble_complexity(kk, delta, th) for kk in ks]
        m_single = [c["single"] for c in comp]
        m_all = [c["all"] for c in comp]
        r_single = _ratios(m_single, klogk)
        r_all = _ratios(m_all, k2)
        ok_single = _non_increasing(r_single[-TOP:])
        ok_all = _non_increasing(r_all[-TOP:])
        holds[th] = bool(ok_single and ok_all)
        tag = f"threshold{th:g}"
        metrics.update({
            f"M_single_{tag}": m_single, f"M_all_{tag}": m_all,
            f"M_single_over_klogk_{tag}": r_single, f"M_all_over_k2_{tag}": r_all,
            f"single_bound_holds_{tag}": ok_single, f"all_bound_holds_{tag}": ok_all,
            f"top_growth_single_{tag}": r_single[-1] / r_single[-TOP], f"top_growth_all_{tag}": r_all[-1] / r_all[-TOP],
            f"gamma1_min_{tag}": [c["gamma1_min"] for c in comp], f"gamma0_max_{tag}": [c["gamma0_max"] for c in comp],
        })
    passed = all(holds.values())
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for th, style in zip(CANDIDATE_THRESHOLDS, ("o-", "s--")):
        tag = f"threshold{th:g}"
        ax1.loglog(ks, metrics[f"M_single_over_klogk_{tag}"], style, label=f"threshold {th:g}")
        ax2.loglog(ks, metrics[f"M_all_over_k2_{tag}"], style, label=f"threshold {th:g}")
    for ax, title in ((ax1, "single input: M(k) / (k log k)"), (ax2, "all inputs: M(k) / k^2")):
        ax.axvspan(top[0], top[-1], color="0.9", label="top of the range (must not increase)")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(kk) for kk in ks])
        ax.minorticks_off()
        ax.set(xlabel="k", ylabel="ratio", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return Evidence(
        metrics=metrics,
        criterion=(f"under every candidate rounding threshold {list(CANDIDATE_THRESHOLDS)}: M_single(k)/(k log k) and "
                   f"M_all(k)/k^2 are non-increasing over the top {TOP} values of k ({top}); M = closed-form "
                   f"NTK-GP ensemble size for failure probability <= {delta} (worst single input; all inputs by the "
                   "union bound)"),
        passed=bool(passed),
        preconditions={
            "the paper's rounding rule is established (arXiv 2502.16763 sections 3-5 could not be read: only the "
            "abstract and introduction were accessible, no official code)": False,
        },
        headline=(Check("all inputs: growth of M/k^2 over the top of the range (threshold 0)",
                        metrics["top_growth_all_threshold0"], "<=", 1.0),
                  Check("single input: growth of M/(k log k) over the top of the range (threshold 0)",
                        metrics["top_growth_single_threshold0"], "<=", 1.0)),
        figures={"complexity_ratios": fig},
        notes=(
            "Closed-form infinite-width NTK-GP of bias-free two-layer ReLU nets trained on the k basis vectors; the "
            "success probability of a rounded M-member mean is Phi-products over coordinates, M found by integer "
            "bisection. Rounding rules: bit = 1 iff mean > threshold, threshold 0 (the sign rule the 'sign-based "
            "features' suggest) and 1e-3 (the finite-width claim's rule); the ratios depend strongly on the rule "
            "because the 0-bit means approach 0 from below as k grows. Until the paper's network and rounding rule "
            "are known this claim is inconclusive; the numbers are reported for both candidates."
        ),
    )
