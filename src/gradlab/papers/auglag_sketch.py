"""Constrained Optimization via Exact Augmented Lagrangian and Randomized Iterative Sketching (arXiv 2305.18379).

Hong, Na, Mahoney & Kolar (ICML 2023). Component: :class:`gradlab.curvature.adasketch.AdaSketchNewton`.

Claims:

* ``logistic_kkt_local_rate``: on constrained logistic regression (scikit-learn's breast-cancer training split,
  30 standardized features, 10 random Gaussian linear constraints consistent with the unit sphere, plus
  ``||w||^2 = 1``; start ``w0 = 1/sqrt(d)``, ``lam0 = 1``, the paper's setup) AdaSketch-Newton with the theory's
  accuracy rule and both sketches (Gaussian, Kaczmarz) brings the KKT residual below 1e-6 within 20 outer
  iterations, takes unit steps in its last 3 iterations, and its (w*, lam*) matches scipy's trust-constr to 1e-5.
* ``hs_known_optima``: the Hock-Schittkowski equality-constrained problems written out in
  :mod:`gradlab.curvature.hs_problems` are solved to their known optima.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from matplotlib import cm
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, claim
from gradlab.core import load_breast_cancer_split, numpy_rng
from gradlab.curvature.adasketch import AdaSketchNewton, AdaSketchResult, EqualityConstrainedProblem
from gradlab.curvature.hs_problems import HS_PROBLEMS, constrained_logistic_problem, random_linear_constraints

PAPER = Paper(
    key="auglag-sketch",
    title="Constrained Optimization via Exact Augmented Lagrangian and Randomized Iterative Sketching",
    short_title="AdaSketch-Newton",
    cluster="curvature",
    arxiv="2305.18379",
    components=("gradlab.curvature.adasketch", "gradlab.curvature.sketching", "gradlab.curvature.hs_problems"),
    statement=("An exact augmented Lagrangian merit function with randomized iterative sketching of the Newton "
               "system, solved only to an adaptive accuracy, converges globally and, near a regular KKT point, "
               "takes unit steps and converges locally linearly (superlinearly with a vanishing accuracy "
               "parameter)."),
    revisions=(
        Revision(
            claim="logistic_kkt_local_rate",
            date="2026-12-01",
            old=("for both sketches (gaussian, kaczmarz) with the theory accuracy rule: iters_to_kkt_1e-6 <= 20 and "
                 "unit steps in the last 3 iterations and max|w - w_tc| <= 1e-5 and max|lam - lam_tc| <= 1e-5"),
            new=("the same pass rule, plus the precondition that for each sketch the theory accuracy rule was "
                 "exercised: at most half of the outer iterations stopped their sketch solve at the 1e5-step cap "
                 "(otherwise inconclusive)"),
            reason=("The claim tests the adaptive accuracy rule, but the Gaussian run hit the sketch cap in 10 of 11 "
                    "outer iterations, so the rule under test was never the one that stopped the solves (issue 9, "
                    "2.11); a capped solve is a fixed-budget solve, not the paper's method."),
            old_result="passed: gaussian iters_to_kkt 11 with 10 of 11 sketch solves capped",
        ),
        Revision(
            claim="hs_known_optima",
            date="2026-12-01",
            old=("for every regular HS problem: KKT <= 1e-6 within 200 iterations and |f - f*| <= 1e-6 (1 + |f*|) "
                 "and max|x - x*| <= 1e-5"),
            new=("the same pass rule, plus the precondition that the theory accuracy rule was exercised: at most "
                 "half of all outer iterations on the regular problems stopped their sketch solve at the cap"),
            reason="Same reason as for logistic_kkt_local_rate (issue 9, 2.11).",
            old_result="passed (capped iterations were not counted)",
        ),
    ),
)

CAP_FRACTION_MAX = 0.5  # precondition: at most this fraction of outer iterations may end their sketch solve at the cap

KKT_LEVEL = 1e-6
MAX_OUTER = 20
UNIT_TAIL = 3
MATCH_TOL = 1e-5


def breast_cancer_constrained_problem(seed: int, n_constraints: int = 10) -> tuple[EqualityConstrainedProblem, int]:
    """The claim's problem: logistic loss on the breast-cancer training split with ``n_constraints`` random
    linear constraints (drawn with ``seed``) and the unit-sphere constraint. Returns ``(problem, d)``."""
    split = load_breast_cancer_split(dtype=torch.float64)
    X = split.x_train.numpy()
    y = split.y_train.numpy()
    d = X.shape[1]
    A, b = random_linear_constraints(d, n_constraints, numpy_rng(seed))
    return constrained_logistic_problem(X, y, A, b, name="breast_cancer_constrained_logistic"), d


def trust_constr_solution(problem: EqualityConstrainedProblem, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """scipy's trust-constr with exact derivatives and tight tolerances; returns ``(x, lam, seconds)`` with the
    multipliers in our sign convention (``grad f + G^T lam = 0``, the same as scipy's ``result.v``)."""
    from scipy.optimize import NonlinearConstraint, minimize

    con = NonlinearConstraint(problem.cons, 0.0, 0.0, jac=problem.jac, hess=problem.cons_hess)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = minimize(problem.fun, x0, jac=problem.grad, hess=problem.hess, method="trust-constr",
                       constraints=[con], options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000})
    return np.asarray(out.x), np.asarray(out.v[0]), time.perf_counter() - t0


def _summary(res: AdaSketchResult, x_ref: np.ndarray, lam_ref: np.ndarray) -> dict[str, float]:
    first = res.first_iteration_below(KKT_LEVEL)
    tail = res.step_sizes[-UNIT_TAIL:]
    return {
        "iters_to_kkt_1e-6": float("inf") if first is None else first,
        "final_kkt": res.kkt[-1],
        "n_iter": res.n_iter,
        "unit_steps_last3": bool(len(tail) == UNIT_TAIL and all(a == 1.0 for a in tail)),
        "x_err": float(np.max(np.abs(res.x - x_ref))),
        "lam_err": float(np.max(np.abs(res.lam - lam_ref))),
        "sketch_iters_total": res.total_sketch_iters,
        "sketch_capped_iters": int(sum(res.sketch_capped)),
        "eta1_final": res.eta1[-1] if res.eta1 else float("nan"),
        "eta2_final": res.eta2[-1] if res.eta2 else float("nan"),
    }


def _theta_to_zero(k: int, kkt: float) -> float:
    """theta_k = min(1, KKT residual) -> 0: the sharpened accuracy of the superlinear local result."""
    return min(1.0, kkt)


@claim(paper=PAPER.key, title="AdaSketch-Newton: KKT < 1e-6 in <= 20 iterations, unit steps at the end, matches "
       "trust-constr on constrained logistic regression", timeouts={"quick": 900})
def logistic_kkt_local_rate(run: ClaimRun) -> Evidence:
    problem, d = breast_cancer_constrained_problem(run.seed)
    m = 11
    x0 = np.full(d, 1.0 / np.sqrt(d))
    lam0 = np.ones(m)
    # smoke: a loose fixed accuracy constant instead of the (slow) theory rule, to prove the code path only
    theory_acc = run.pick(smoke=1.0, quick=None)
    run.progress(0.0, "scipy trust-constr reference")
    x_ref, lam_ref, t_ref = trust_constr_solution(problem, x0)
    variants = {
        "gaussian": dict(solver="gaussian", accuracy_constant=theory_acc),
        "kaczmarz": dict(solver="kaczmarz", accuracy_constant=theory_acc),
        "gaussian_kappa1": dict(solver="gaussian", accuracy_constant=1.0),
        "gaussian_kappa1_theta_to_0": dict(solver="gaussian", accuracy_constant=1.0, theta=_theta_to_zero),
        "exact": dict(solver="exact"),
    }
    results: dict[str, AdaSketchResult] = {}
    seconds: dict[str, float] = {}
    for i, (name, kw) in enumerate(variants.items()):
        run.progress(0.1 + 0.18 * i, f"AdaSketch-Newton ({name})")
        t0 = time.perf_counter()
        results[name] = AdaSketchNewton(tol=1e-10, max_iter=100, rng=run.seed, **kw).solve(problem, x0, lam0)
        seconds[name] = time.perf_counter() - t0
    metrics: dict[str, object] = {"trust_constr_seconds": t_ref, "n": d, "m": m}
    for name, res in results.items():
        for key, val in _summary(res, x_ref, lam_ref).items():
            metrics[f"{name}_{key}"] = val
        metrics[f"{name}_seconds"] = seconds[name]
    ok = {}
    for name in ("gaussian", "kaczmarz"):
        ok[name] = bool(metrics[f"{name}_iters_to_kkt_1e-6"] <= MAX_OUTER and metrics[f"{name}_unit_steps_last3"]
                        and metrics[f"{name}_x_err"] <= MATCH_TOL and metrics[f"{name}_lam_err"] <= MATCH_TOL)
    passed = bool(ok["gaussian"] and ok["kaczmarz"])
    capped = {name: metrics[f"{name}_sketch_capped_iters"] / max(1, metrics[f"{name}_n_iter"])
              for name in ("gaussian", "kaczmarz")}
    for name, frac in capped.items():
        metrics[f"{name}_capped_fraction"] = frac
    preconditions = {
        f"{name} sketch: theory accuracy rule exercised (fraction of outer iterations capped at 1e5 sketch steps)":
            Check(f"{name} capped fraction", frac, "<=", CAP_FRACTION_MAX)
        for name, frac in capped.items()
    }
    headline = tuple(Check(f"{name} iterations to KKT 1e-6", metrics[f"{name}_iters_to_kkt_1e-6"], "<=", MAX_OUTER)
                     for name in ("gaussian", "kaczmarz"))

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for name, res in results.items():
        ax1.semilogy(np.maximum(res.kkt, 1e-17), marker="o", ms=3, label=name)
    for j, (name, res) in enumerate(results.items()):
        ax2.plot(np.arange(1, res.n_iter + 1), res.step_sizes, marker="osD^v"[j], ms=7 - 1.5 * j, lw=1, label=name)
    ax1.axhline(KKT_LEVEL, color="gray", ls="--", lw=1)
    ax1.axvline(MAX_OUTER, color="gray", ls=":", lw=1)
    ax1.set_xlabel("outer iteration k")
    ax1.set_ylabel("KKT residual ||(grad_x L, c)||")
    ax1.set_title("breast cancer, 10 linear + sphere constraints")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("outer iteration k")
    ax2.set_ylabel("accepted step size alpha_k")
    ax2.set_title("Armijo step sizes (1 = unit step)")
    ax2.set_ylim(0, 1.05)
    fig.tight_layout()
    return Evidence(
        metrics=metrics,
        criterion=("for both sketches (gaussian, kaczmarz) with the theory accuracy rule: iters_to_kkt_1e-6 <= 20 and "
                   "unit steps in the last 3 iterations and max|w - w_tc| <= 1e-5 and max|lam - lam_tc| <= 1e-5"),
        passed=passed,
        preconditions=preconditions,
        headline=headline,
        figures={"kkt_and_steps": fig},
        notes=("Breast-cancer training split (426 x 30, standardized); 10 Gaussian constraints A w = A w0 with a "
               "random unit w0 (so the feasible set is non-empty) plus ||w||^2 = 1; w0 = 1/sqrt(d), lam0 = 1; "
               "paper defaults eta=(1, 0.1), delta=0.1, xi_B=0.1, beta=0.1, nu=1.5, theta=1; runs stop at KKT 1e-10. "
               "Sketch solves are capped at 1e5 steps (the authors' cap); *_sketch_capped_iters counts the outer "
               "iterations whose theory accuracy target was not reached within the cap (the direction is used as is); "
               f"if more than {CAP_FRACTION_MAX:.0%} of them are capped the adaptive rule was not exercised and the "
               "claim is inconclusive. "
               "gaussian_kappa1 (fixed accuracy constant 1), gaussian_kappa1_theta_to_0 (same with theta_k = min(1, KKT), "
               "the superlinear variant) and exact (numpy solve) are shown for comparison only. "
               "Smoke scale replaces the theory accuracy rule by the constant 1."),
    )


@claim(paper=PAPER.key, title="AdaSketch-Newton reaches the known optima of Hock-Schittkowski problems",
       timeouts={"quick": 900})
def hs_known_optima(run: ClaimRun) -> Evidence:
    names = run.pick(smoke=["hs028", "hs040"], quick=list(HS_PROBLEMS))
    max_sketch = run.pick(smoke=20_000, quick=100_000)
    metrics: dict[str, object] = {}
    ok_regular: list[bool] = []
    capped_regular = iters_regular = 0
    rows = []
    for i, name in enumerate(names):
        run.progress(i / len(names), name)
        hp = HS_PROBLEMS[name]
        regular = hp.reduced_hessian_min_eig() > 1e-6
        # degenerate problems make the KKT matrix nearly singular near x*, where the theory's accuracy rule
        # needs ~1e5 sketch steps per iteration for hundreds of iterations: they run with exact KKT solves
        solver = "gaussian" if regular else "exact"
        res = AdaSketchNewton(solver=solver, tol=1e-8, max_iter=200, max_sketch_iter=max_sketch,
                              rng=run.seed).solve(hp.problem(), np.asarray(hp.x0))
        x_err = float(np.max(np.abs(res.x - np.asarray(hp.x_star))))
        f_err = float(abs(hp.problem().fun(res.x) - hp.f_star))
        ok = bool(res.kkt[-1] <= KKT_LEVEL and f_err <= 1e-6 * (1 + abs(hp.f_star)) and x_err <= MATCH_TOL)
        metrics[f"{name}_x_err"] = x_err
        metrics[f"{name}_f_err"] = f_err
        metrics[f"{name}_kkt"] = res.kkt[-1]
        metrics[f"{name}_iters"] = res.n_iter
        metrics[f"{name}_sketch_iters"] = res.total_sketch_iters
        metrics[f"{name}_sketch_capped_iters"] = int(sum(res.sketch_capped))
        metrics[f"{name}_regular"] = regular
        metrics[f"{name}_ok"] = ok
        if regular:
            ok_regular.append(ok)
            capped_regular += int(sum(res.sketch_capped))
            iters_regular += res.n_iter
        rows.append((name, res, regular))
    metrics["n_regular"] = len(ok_regular)
    metrics["n_regular_ok"] = int(sum(ok_regular))
    metrics["n_degenerate_ok"] = int(sum(bool(metrics[f"{n}_ok"]) for n, _, r in rows if not r))
    passed = bool(ok_regular) and all(ok_regular)
    cap_frac = capped_regular / max(1, iters_regular)
    metrics["regular_capped_fraction"] = cap_frac

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colors = [cm.tab20(i % 20) for i in range(len(rows))]
    for (name, res, regular), color in zip(rows, colors):
        ax.semilogy(np.maximum(res.kkt, 1e-17), ls="-" if regular else "--", lw=1.2, color=color, label=name)
    ax.axhline(KKT_LEVEL, color="gray", ls=":", lw=1)
    ax.set_xlabel("outer iteration k")
    ax.set_ylabel("KKT residual")
    ax.set_title("AdaSketch-Newton on HS problems\n(solid: Gaussian sketch; dashed: degenerate, exact KKT solves)")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return Evidence(
        metrics=metrics,
        criterion=("for every HS problem whose reported solution satisfies the second-order sufficient condition "
                   "(reduced-Hessian min eigenvalue > 1e-6; the local theory's assumption): KKT <= 1e-6 within 200 "
                   "iterations and |f - f*| <= 1e-6 (1 + |f*|) and max|x - x*| <= 1e-5 (collection's start point)"),
        passed=passed,
        preconditions={"theory accuracy rule exercised on the regular problems (fraction of outer iterations whose "
                       "sketch solve stopped at the cap)": Check("capped fraction", cap_frac, "<=", CAP_FRACTION_MAX)},
        headline=(Check("regular HS problems solved (fraction)", len([o for o in ok_regular if o]) / max(1, len(ok_regular)),
                        ">=", 1.0),),
        figures={"hs_kkt": fig},
        notes=("Gaussian sketch with the theory accuracy rule (sketch cap 1e5 per solve, as the authors' code) and "
               "the paper's default parameters, from the collection's start points. Degenerate problems (singular "
               "reduced Hessian at x*: HS26, HS46, HS47, HS49) violate the local theory's assumption; they are run "
               "with exact KKT solves (the sketch variant needs ~1e5 sketch steps per iteration there) and reported "
               "but do not enter the verdict; x* is only determined to about KKT^(1/3) on them."),
    )
