"""AdaSketch-Newton vs scipy trust-constr: wall time on the auglag-sketch claim problem, side by side.

Problem: logistic regression on scikit-learn's breast-cancer training split (30 features) with 10 random linear
constraints and ||w||^2 = 1 (the paper's constrained logistic regression), from w0 = 1/sqrt(d), lam0 = 1, solved
to KKT residual 1e-8 (our solver) and with gtol = 1e-10 (trust-constr; exact Hessians passed to both).

Run: ``OMP_NUM_THREADS=1 python benchmarks/adasketch.py [--repeats 3] [--seed 0] [--skip-theory]``.
Prints median seconds, outer iterations, sketch steps and the final KKT residual per solver, and the ratio
ours / trust-constr. The theory accuracy rule costs ~1e6 sketch steps; ``--skip-theory`` leaves it out.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

from gradlab.curvature.adasketch import AdaSketchNewton
from gradlab.papers.auglag_sketch import breast_cancer_constrained_problem


def kkt_residual(problem, x: np.ndarray, lam: np.ndarray) -> float:
    return float(np.linalg.norm(np.concatenate([problem.grad(x) + problem.jac(x).T @ lam, problem.cons(x)])))


def run_trust_constr(problem, x0: np.ndarray) -> tuple[float, int, float]:
    from scipy.optimize import NonlinearConstraint, minimize

    con = NonlinearConstraint(problem.cons, 0.0, 0.0, jac=problem.jac, hess=problem.cons_hess)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = minimize(problem.fun, x0, jac=problem.grad, hess=problem.hess, method="trust-constr",
                       constraints=[con], options={"gtol": 1e-10, "xtol": 1e-14, "maxiter": 5000})
    return time.perf_counter() - t0, int(out.nit), kkt_residual(problem, out.x, out.v[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-theory", action="store_true")
    args = parser.parse_args()

    problem, d = breast_cancer_constrained_problem(args.seed)
    x0, lam0 = np.full(d, 1.0 / np.sqrt(d)), np.ones(11)
    variants = {
        "adasketch exact KKT solve": dict(solver="exact"),
        "adasketch gaussian, kappa=1": dict(solver="gaussian", accuracy_constant=1.0),
        "adasketch kaczmarz, kappa=1": dict(solver="kaczmarz", accuracy_constant=1.0),
    }
    if not args.skip_theory:
        variants["adasketch gaussian, theory rule"] = dict(solver="gaussian")
        variants["adasketch kaczmarz, theory rule"] = dict(solver="kaczmarz")

    rows = []
    times = []
    for _ in range(args.repeats):
        t, nit, kkt = run_trust_constr(problem, x0)
        times.append(t)
    anchor = statistics.median(times)
    rows.append(("scipy trust-constr (anchor)", anchor, nit, 0, kkt))
    for name, kw in variants.items():
        times = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            res = AdaSketchNewton(tol=1e-8, max_iter=200, rng=args.seed + r, **kw).solve(problem, x0, lam0)
            times.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(times), res.n_iter, res.total_sketch_iters, res.kkt[-1]))

    print(f"breast-cancer constrained logistic regression: n={d}, m=11, median of {args.repeats} runs")
    print(f"{'solver':34s} {'seconds':>9s} {'ratio':>7s} {'iters':>6s} {'sketch steps':>13s} {'final KKT':>10s}")
    for name, sec, nit, sk, kkt in rows:
        print(f"{name:34s} {sec:9.3f} {sec / anchor:7.2f} {nit:6d} {sk:13d} {kkt:10.1e}")


if __name__ == "__main__":
    main()
