"""Gradient-Normalized Smoothness for Optimization with Approximate Hessians (arXiv 2506.13710).

Semenov, Jaggi & Doikov analyse gradient-regularized Newton steps x+ = x - (H + lambda B)^-1 g with
lambda = ||g||_* / gamma and an adaptive gamma, where H is any approximation of the Hessian. They prove global rates
that adapt to the problem's smoothness and, for logistic regression and softmax (LogSumExp) problems, global linear
rates with approximate Hessians; the rate degrades with the error of the approximation, and H = 0 gives the
gradient method. Both claims use :class:`gradlab.curvature.GradRegNewton`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, claim
from gradlab.curvature import GradRegNewton, WeightedGaussNewton

PAPER = Paper(
    key="gn-smoothness",
    title="Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
    short_title="Gradient-normalized smoothness",
    cluster="curvature",
    arxiv="2506.13710",
    components=("gradlab.curvature.grad_reg_newton", "gradlab.curvature.hvp"),
    statement=("Gradient-regularized Newton steps with any approximation H of the Hessian converge globally at "
               "rates governed by the gradient-normalized smoothness; for logistic regression and softmax problems "
               "they converge linearly with a rate that degrades with how well H approximates the Hessian "
               "(relative approximation), H = 0 being the gradient method."),
    revisions=(
        Revision(
            claim="softmax_iterations",
            date="2026-12-01",
            old=("iters_exact <= 25 and iters_weighted_gn <= 40 and both < iters_gradient (iterations to f - f* < "
                 "1e-8; worst case over problems), with 1 problem at quick scale"),
            new="the same rule over 3 problems at quick scale (5 at full)",
            reason=("The criterion says 'worst case over problems' but quick ran a single problem, so there was no "
                    "worst case to take (issue 9, 2.6)."),
            old_result="passed: iters_exact 17, iters_weighted_gn 28, iters_gradient 52 (problems = 1)",
        ),
        Revision(
            claim="logistic_approximation_quality",
            date="2026-12-01",
            old=("for every pair of methods, smaller relative Hessian-approximation error at w* implies final f - f* "
                 "no larger after 60 iterations (error = ||H - hess f(w*)||_2 / ||hess f(w*)||_2; gaps floored at "
                 "1e-12)"),
            new=("for every pair of methods, a smaller relative condition number kappa = beta/alpha of H with respect "
                 "to the Hessian (alpha hess f(w) <= H <= beta hess f(w); worst case over the declared points w = w0 + "
                 "t (w* - w0), t = 0, 1/4, 1/2, 3/4, 1, the segment from the start to the optimum) implies final f - f* "
                 "no larger after 60 iterations (gaps floored at 1e-12); H = 0 has kappa = inf"),
            reason=("The paper's rates depend on a relative approximation of the Hessian, not an additive spectral "
                    "error at w* only; the additive error ranks H = 0 (error 1) above the bound X^T X/(4n), which is "
                    "exact at the start point and a valid upper bound everywhere (issue 9, 2.6)."),
            old_result="failed: the ordering by additive spectral error at w* did not match the final gaps (f* 0.3457)",
        ),
    ),
)

SEGMENT_POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # t of w0 + t (w* - w0) where the relative condition number is taken


def relative_condition_number(approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """``beta / alpha`` for the tightest ``alpha hess <= H <= beta hess`` (generalized eigenvalues of (H, hess)).

    ``hessian`` must be positive definite; returns ``inf`` when ``H`` is not positive definite (``alpha <= 0``).
    """
    from scipy.linalg import eigh

    lam = eigh(approx.double().numpy(), hessian.double().numpy(), eigvals_only=True)
    lo, hi = float(lam.min()), float(lam.max())
    if lo <= 1e-12 * max(1.0, abs(hi)):
        return math.inf
    return hi / lo


def _lse_problem(n: int, d: int, mu: float, seed: int):
    """f(x) = mu * LSE((A x - b)/mu) with A ~ U[-1, 1], rows shifted so that grad f(0) = 0 (x* = 0, f* = f(0))."""
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1
    b = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    pi0 = torch.softmax(-b / mu, dim=0)
    A_shift = A - torch.outer(torch.ones(n, dtype=torch.float64), A.T @ pi0)
    f_star = float(mu * torch.logsumexp(-b / mu, dim=0))
    return A, A_shift, b, f_star


def _run_lse(hessian, A, A_shift, b, mu, f_star, max_iters, tol) -> list[float]:
    x = nn.Parameter(torch.ones(A.shape[1], dtype=torch.float64))
    opt = GradRegNewton([x], hessian=hessian, metric=A.T @ A, gamma=1.0)

    def closure():
        z = A_shift @ x - b
        return mu * torch.logsumexp(z / mu, dim=0), z

    gaps = []
    for _ in range(max_iters + 1):
        with torch.no_grad():
            gaps.append(float(mu * torch.logsumexp((A_shift @ x - b) / mu, dim=0)) - f_star)
        if gaps[-1] < tol:
            break
        opt.step(closure)
    return gaps


def _first_below(gaps: list[float], tol: float) -> int:
    for k, v in enumerate(gaps):
        if v < tol:
            return k
    return 10**9


@claim(
    paper=PAPER.key,
    title="On LogSumExp, exact-Hessian GRN reaches 1e-8 in <= 25 iterations, weighted Gauss-Newton in <= 40, "
    "both fewer than the gradient method",
    timeouts={"quick": 600},
)
def softmax_iterations(run: ClaimRun) -> Evidence:
    n = d = run.pick(smoke=30, quick=200, full=200)
    problems = run.pick(smoke=1, quick=3, full=5)
    mu, tol, max_iters = 1.0, 1e-8, run.pick(smoke=60, quick=300, full=300)
    methods = {"exact": "exact", "weighted_gn": WeightedGaussNewton(temperature=mu), "gradient": "zero"}
    iters: dict[str, list[int]] = {k: [] for k in methods}
    curves: dict[str, list[float]] = {}
    for p in range(problems):
        A, A_shift, b, f_star = _lse_problem(n, d, mu, 7919 * run.seed + p)
        for j, (name, h) in enumerate(methods.items()):
            run.progress((p * len(methods) + j) / (problems * len(methods)), f"{name} on problem {p}")
            gaps = _run_lse(h, A, A_shift, b, mu, f_star, max_iters, tol)
            iters[name].append(_first_below(gaps, tol))
            if p == 0:
                curves[name] = gaps
    worst = {k: max(v) for k, v in iters.items()}

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, gaps in curves.items():
        ax.semilogy(range(len(gaps)), np.maximum(gaps, 1e-16), label=f"{name} ({iters[name][0]} it.)")
    ax.axhline(tol, color="k", ls=":", lw=1)
    ax.set(xlabel="iteration", ylabel="f(x_k) - f*", title=f"LogSumExp {n}x{d}, mu={mu}, metric B = A^T A")
    ax.legend()

    passed = (
        worst["exact"] <= 25
        and worst["weighted_gn"] <= 40
        and worst["exact"] < worst["gradient"]
        and worst["weighted_gn"] < worst["gradient"]
    )
    return Evidence(
        metrics={
            "iters_exact": worst["exact"],
            "iters_weighted_gn": worst["weighted_gn"],
            "iters_gradient": worst["gradient"],
            "per_problem": iters,
            "n": n,
            "problems": problems,
        },
        criterion="iters_exact <= 25 and iters_weighted_gn <= 40 and both < iters_gradient "
        "(iterations to f - f* < 1e-8; worst case over problems)",
        passed=bool(passed),
        headline=(Check("worst-case iterations, exact Hessian", worst["exact"], "<=", 25),
                  Check("worst-case iterations, weighted Gauss-Newton", worst["weighted_gn"], "<=", 40)),
        figures={"convergence": fig},
        notes="f(x) = mu*LSE((A x - b)/mu), A, b ~ U[-1, 1]; rows of A shifted by grad f(0) so that x* = 0 and f* is exact "
        "(the official code's zero-oracle trick); x0 = 1; metric B = A^T A of the unshifted A (the shifted A is "
        "rank-deficient); gradient method = GRN with H = 0 and the same gamma search. Iteration cap "
        f"{max_iters} (10^9 reported if not reached).",
    )


def _logistic_data(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, d, dtype=torch.float64)  # anisotropic features
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * scales
    w_true = torch.randn(d, generator=g, dtype=torch.float64) / scales / math.sqrt(d) * 3
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(X @ w_true)).double()
    return X, y


def _logistic_optimum(X: torch.Tensor, y: torch.Tensor) -> tuple[float, np.ndarray]:
    """f* by scipy's trust-region Newton on the analytic derivatives (an independent solver)."""
    from scipy.optimize import minimize

    Xn, yn = X.numpy(), y.numpy()
    n = Xn.shape[0]

    def f(w):
        z = Xn @ w
        return float(np.mean(np.logaddexp(0, z) - yn * z))

    def grad(w):
        return Xn.T @ (1 / (1 + np.exp(-(Xn @ w))) - yn) / n

    def hess(w):
        s = 1 / (1 + np.exp(-(Xn @ w)))
        return Xn.T @ (Xn * (s * (1 - s))[:, None]) / n

    res = minimize(f, np.zeros(Xn.shape[1]), jac=grad, hess=hess, method="trust-exact", options={"gtol": 1e-13})
    return float(res.fun), res.x


@claim(
    paper=PAPER.key,
    title="On logistic regression the quality of the Hessian approximation orders GRN methods (exact, Fisher, "
    "fixed bound, gradient)",
    timeouts={"quick": 600},
)
def logistic_approximation_quality(run: ClaimRun) -> Evidence:
    n, d = run.pick(smoke=(200, 10), quick=(2000, 100), full=(4000, 200))
    iters = run.pick(smoke=10, quick=60, full=100)
    X, y = _logistic_data(n, d, run.seed)
    f_star, w_star = _logistic_optimum(X, y)
    bce = nn.BCEWithLogitsLoss()
    bound = X.T @ X / (4 * n)
    methods = {"exact": "exact", "fisher": "fisher", "fixed_bound": lambda w: bound, "gradient": "zero"}

    # approximation quality: relative condition number of H w.r.t. the Hessian along the segment w0 -> w*
    ws = torch.as_tensor(w_star)

    def curvatures(w: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = torch.sigmoid(X @ w)
        hess = X.T @ (X * (s * (1 - s))[:, None]) / n
        r = s - y
        fisher = (X * r[:, None]).T @ (X * r[:, None]) / n
        return hess, {"exact": hess, "fisher": fisher, "fixed_bound": bound, "gradient": torch.zeros_like(hess)}

    kappa_path: dict[str, list[float]] = {k: [] for k in methods}
    for t in SEGMENT_POINTS:
        hess, approx = curvatures(t * ws)  # w0 = 0
        for k, v in approx.items():
            kappa_path[k].append(relative_condition_number(v, hess))
    kappa = {k: max(v) for k, v in kappa_path.items()}
    kappa_star = {k: v[-1] for k, v in kappa_path.items()}
    hess_star, approx_star = curvatures(ws)
    hnorm = float(torch.linalg.matrix_norm(hess_star, 2))
    additive = {k: float(torch.linalg.matrix_norm(v - hess_star, 2)) / hnorm for k, v in approx_star.items()}

    curves: dict[str, list[float]] = {}
    for j, (name, h) in enumerate(methods.items()):
        run.progress(j / len(methods), f"GRN with {name}")
        w = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        opt = GradRegNewton([w], hessian=h, grad_tol=1e-12)

        def closure(w=w):
            out = X @ w
            return bce(out, y), out

        gaps = []
        for _ in range(iters):
            with torch.no_grad():
                gaps.append(float(bce(X @ w, y)) - f_star)
            opt.step(closure)
        with torch.no_grad():
            gaps.append(float(bce(X @ w, y)) - f_star)
        curves[name] = gaps
    floor = 1e-12
    final = {k: max(v[-1], floor) for k, v in curves.items()}
    order_by_kappa = sorted(kappa, key=lambda k: kappa[k])
    violations = [(a, b) for a in kappa for b in kappa if kappa[a] < kappa[b] and final[a] > final[b]]
    consistent = not violations

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, gaps in curves.items():
        ax.semilogy(range(len(gaps)), np.maximum(gaps, 1e-16), label=f"{name} (kappa {kappa[name]:.3g})")
    ax.set(xlabel="iteration", ylabel="f(w_k) - f*", title=f"Logistic regression n={n}, d={d}: GRN with approximations")
    ax.legend(fontsize=8)

    return Evidence(
        metrics={
            "final_gap": final,
            "relative_condition_number": kappa,
            "relative_condition_number_at_w_star": kappa_star,
            "relative_condition_number_path": kappa_path,
            "segment_points": list(SEGMENT_POINTS),
            "additive_spectral_error_at_w_star": additive,
            "order_by_kappa": order_by_kappa,
            "order_by_final_gap": sorted(final, key=lambda k: final[k]),
            "ordering_violations": [f"{a} < {b}" for a, b in violations],
            "f_star": f_star,
        },
        criterion="for every pair of methods, a smaller relative condition number beta/alpha of H w.r.t. the Hessian "
        "(worst case over w0 + t (w* - w0), t in {0, 1/4, 1/2, 3/4, 1}) implies final f - f* no larger after "
        f"{iters} iterations (gaps floored at 1e-12)",
        passed=bool(consistent),
        headline=(Check("pairs ordered by kappa whose final gaps are inverted", len(violations), "<=", 0),),
        figures={"convergence": fig},
        notes="Anisotropic Gaussian features (scales 0.1..10), labels from a logistic teacher; methods: exact Hessian, "
        "empirical Fisher, the fixed bound X^T X/(4n), and H = 0 (gradient method with the same gamma search); metric B = I. "
        "Approximation quality = relative condition number beta/alpha (generalized eigenvalues of (H, hess f(w)), "
        "scipy.linalg.eigh), worst case over 5 points of the segment from w0 = 0 to w*; the additive spectral error "
        "at w* (the old criterion's statistic) is reported. f* from scipy trust-exact.",
    )
