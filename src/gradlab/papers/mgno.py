"""MgNO: Efficient Parameterization of Linear Operators via Multigrid (He, Liu & Xu, ICLR 2024, arXiv 2310.19809).

MgNO parameterises each linear operator of a neural operator layer by one multigrid V-cycle of convolutions
(:class:`gradlab.operators.MgConv`) and stacks :math:`u \\leftarrow \\sigma(\\mathrm{MgConv}(u) + W u + b)`
(:class:`gradlab.operators.MgNO`). The claims check (1) that the parameterisation really is a multigrid cycle:
with hand-set weights an MgConv equals a classical V-cycle and, iterated, converges at a mesh-independent rate;
(2) the accuracy statement: on Darcy flow MgNO reaches a test error no worse than an FNO with the same number of
parameters and the same number of epochs.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, claim, paired_bootstrap_ci
from gradlab.operators import FNO, DarcyCoefficient, MgConv, MgNO, darcy_dataset
from gradlab.papers._operator_training import (Normalised, fast_cpu_convs, fit, mean_predictor_error, n_params,
                                               relative_errors)

PAPER = Paper(
    key="mgno",
    title="MgNO: Efficient Parameterization of Linear Operators via Multigrid",
    short_title="MgNO",
    cluster="operators",
    arxiv="2310.19809",
    components=("gradlab.operators.multigrid", "gradlab.operators.function_space", "gradlab.operators.pde",
                "gradlab.papers._operator_training"),
    statement="Parameterising every linear operator of a neural operator by a multigrid V-cycle of convolutions "
              "(MgNO) gives a network that is a genuine multigrid method and reaches state-of-the-art accuracy on "
              "Darcy flow with fewer parameters than spectral operators such as FNO.",
)


# ----------------------------------------------------------------------------------------------------- V-cycle
def _lap_1d(n: int, h: float) -> sp.csr_matrix:
    return sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="csr") / h**2


def _fw_1d(n: int) -> sp.csr_matrix:
    nc = (n - 1) // 2
    rows = np.repeat(np.arange(nc), 3)
    cols = (2 * np.arange(nc)[:, None] + np.arange(3)[None, :]).reshape(-1)
    vals = np.tile([0.25, 0.5, 0.25], nc)
    return sp.csr_matrix((vals, (rows, cols)), shape=(nc, n))


class _SparseVCycle:
    """Textbook 2-D geometric multigrid V-cycle with scipy sparse matrices (the independent reference)."""

    def __init__(self, n: int, n_levels: int, nu: tuple[int, int], coarse_sweeps: int, omega: float) -> None:
        self.A, self.R, self.P, self.D = [], [], [], []
        size = n
        for level in range(n_levels):
            h = 1.0 / (size + 1)
            T, eye = _lap_1d(size, h), sp.identity(size, format="csr")
            A = (sp.kron(T, eye) + sp.kron(eye, T)).tocsr()
            self.A.append(A)
            self.D.append(A.diagonal())
            if level < n_levels - 1:
                R1 = _fw_1d(size)
                R = sp.kron(R1, R1).tocsr()
                self.R.append(R)
                self.P.append((4.0 * R.T).tocsr())
                size = (size - 1) // 2
        self.nu, self.coarse, self.omega, self.L = nu, coarse_sweeps, omega, n_levels

    def _smooth(self, level: int, u: np.ndarray, f: np.ndarray, count: int) -> np.ndarray:
        for _ in range(count):
            u = u + self.omega * (f - self.A[level] @ u) / self.D[level]
        return u

    def __call__(self, f: np.ndarray, level: int = 0) -> np.ndarray:
        u = np.zeros_like(f)
        if level == self.L - 1:
            return self._smooth(level, u, f, self.coarse)
        u = self._smooth(level, u, f, self.nu[0])
        e = self(self.R[level] @ (f - self.A[level] @ u), level + 1)
        u = u + self.P[level] @ e
        return self._smooth(level, u, f, self.nu[1])


def _rho(mg: MgConv, A: sp.csr_matrix, n: int, seed: int, iters: int, tail: int) -> tuple[float, list[float]]:
    """Asymptotic residual reduction of e <- e - V(A e): power iteration, geometric mean of the last ``tail``."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n * n)
    factors = []
    with torch.no_grad():
        for _ in range(iters):
            e /= np.linalg.norm(A @ e)
            r = A @ e
            corr = mg(torch.from_numpy(r.reshape(1, 1, n, n))).reshape(-1).numpy()
            e = e - corr
            factors.append(float(np.linalg.norm(A @ e)))  # ||r_{k+1}|| / ||r_k|| with ||r_k|| = 1
    return float(np.exp(np.mean(np.log(factors[-tail:])))), factors


@claim(paper=PAPER.key, title="With hand-set weights an MgConv is a textbook V-cycle whose iteration converges "
       "at a mesh-independent rate (rho <= 0.45 for V(2,0), <= 0.25 for V(2,2))", timeouts={"quick": 600})
def vcycle(run: ClaimRun) -> Evidence:
    sizes = run.pick(smoke=[15, 31], quick=[31, 63, 127], full=[31, 63, 127, 255])
    starts = run.seeds(run.pick(smoke=2, quick=3, full=5))
    iters, tail, coarse, omega = 30, 5, 50, 0.8
    cycles = {"V(2,0)": (2, 0), "V(2,2)": (2, 2)}
    bounds = {"V(2,0)": 0.45, "V(2,2)": 0.25}
    rho: dict[str, list[float]] = {c: [] for c in cycles}
    hist: dict[str, dict[int, list[float]]] = {c: {} for c in cycles}
    equiv_err = 0.0
    total = len(cycles) * len(sizes)
    done = 0
    for name, nu in cycles.items():
        for n in sizes:
            L = int(round(math.log2(n + 1))) - 1  # coarsest grid 3 x 3
            h = 1.0 / (n + 1)
            mg = MgConv.poisson_vcycle(L, h, ndim=2, smoothing=nu, coarse_sweeps=coarse, omega=omega)
            ref = _SparseVCycle(n, L, nu, coarse, omega)
            f = np.random.default_rng(run.seed + n).standard_normal(n * n)
            with torch.no_grad():
                ours = mg(torch.from_numpy(f.reshape(1, 1, n, n))).reshape(-1).numpy()
            theirs = ref(f)
            equiv_err = max(equiv_err, float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
            per_start = [_rho(mg, ref.A[0], n, s, iters, tail) for s in starts]
            rho[name].append(max(r for r, _ in per_start))
            hist[name][n] = per_start[0][1]
            done += 1
            run.progress(done / total, f"{name} n={n}")
    spread = {c: max(v) / min(v) for c, v in rho.items()}
    worst = {c: max(v) for c, v in rho.items()}
    ok_rho = all(worst[c] <= bounds[c] for c in cycles)
    ok_spread = all(spread[c] <= 1.1 for c in cycles)
    passed = bool(ok_rho and ok_spread)

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for name, style in (("V(2,0)", "-"), ("V(2,2)", "--")):
        for n, fac in hist[name].items():
            ax1.semilogy(np.arange(1, iters + 1), np.cumprod(fac), style, label=f"{name}, n={n}")
        ax2.plot(sizes, rho[name], "o" + style, label=f"{name} (bound {bounds[name]})")
        ax2.axhline(bounds[name], color="gray", ls=":")
    ax1.set(xlabel="iteration", ylabel="relative residual", title="MgConv V-cycle iteration, 2-D Poisson")
    ax1.legend(fontsize=7)
    ax2.set(xscale="log", xlabel="interior nodes per side n", ylabel="asymptotic reduction rho",
            title="Mesh independence of the convergence factor")
    ax2.legend(fontsize=8)
    return Evidence(
        metrics={"sizes": sizes, "rho_v20": rho["V(2,0)"], "rho_v22": rho["V(2,2)"],
                 "spread_v20": spread["V(2,0)"], "spread_v22": spread["V(2,2)"],
                 "max_rel_diff_vs_sparse_vcycle": equiv_err, "coarse_sweeps": coarse, "omega": omega},
        criterion="max over n of rho(V(2,0)) <= 0.45 and of rho(V(2,2)) <= 0.25, and max/min of rho over n <= 1.1 "
                  "for both cycles (rho = geometric mean of the last 5 of 30 power-iteration residual reductions, "
                  "worst of the random starts)",
        passed=passed,
        preconditions={"MgConv equals the sparse-matrix V-cycle": Check("max relative difference", equiv_err,
                                                                        "<=", 1e-10)},
        headline=(Check("rho V(2,0), worst n", worst["V(2,0)"], "<=", 0.45),
                  Check("rho V(2,2), worst n", worst["V(2,2)"], "<=", 0.25),
                  Check("max/min rho over n", max(spread.values()), "<=", 1.1)),
        figures={"vcycle_convergence": fig},
        notes=f"2-D Dirichlet Poisson on n x n interior nodes (n = 2^k - 1), vertex hierarchy down to 3 x 3, full "
              f"weighting, linear interpolation, damped Jacobi (omega={omega}), {coarse} sweeps on the coarsest "
              "level, residual restriction, zero initial coarse guess. The same module is first checked against an "
              "independent scipy.sparse V-cycle on a random right-hand side.",
    )


# ----------------------------------------------------------------------------------------------------- vs FNO
def _fno_matching(target: int, ndim: int, modes: int | tuple[int, int]) -> FNO:
    """The FNO (pinned defaults: 4 layers, projection 128, grid embedding) whose width best matches ``target``."""
    best_gap, best_width = math.inf, 4
    for width in range(4, 257):
        count = n_params(FNO(1, 1, width, modes, 4, projection_channels=128))
        if abs(count - target) < best_gap:
            best_gap, best_width = abs(count - target), width
        if count > target:
            break
    return FNO(1, 1, best_width, modes, 4, projection_channels=128)


def _compare(run: ClaimRun, ndim: int, cfg: dict, seeds: tuple[int, ...], frac: tuple[float, float]) -> dict:
    n_train, n_test = cfg["n_train"], cfg["n_test"]
    coef = DarcyCoefficient(n_train + n_test, ndim, n_terms=cfg["n_terms"], seed=run.seed + 17 * ndim)
    a, u = darcy_dataset(coef, cfg["n"], n_sub=cfg["n_sub"])
    a_tr, u_tr, a_te, u_te = a[:n_train], u[:n_train], a[n_train:], u[n_train:]
    out: dict = {"mgno": [], "fno": [], "mgno_train": [], "fno_train": [], "curves": {}}
    steps = 2 * len(seeds)
    k = 0
    for seed in seeds:
        for name in ("mgno", "fno"):
            torch.manual_seed(seed)
            if name == "mgno":
                net = MgNO(1, 1, cfg["hidden"], 4, cfg["levels"], ndim=ndim)
                out["mgno_params"] = n_params(net)
            else:
                net = _fno_matching(out["mgno_params"], ndim, cfg["modes"])
                out["fno_params"] = n_params(net)
                out["fno_width"] = net.lifting.out_channels
            model = Normalised(net, a_tr, u_tr)
            lo, hi = frac
            with fast_cpu_convs(ndim):
                curve = fit(model, a_tr, u_tr, epochs=cfg["epochs"], batch_size=cfg["batch"], lr=cfg["lr"],
                            weight_decay=1e-4, seed=seed, loss=cfg["loss"],
                            progress=lambda f: run.progress(lo + (hi - lo) * (k + f) / steps, f"{ndim}-D {name}"))
                out[name].append(float(relative_errors(model, a_te, u_te).mean()))
                out[name + "_train"].append(float(relative_errors(model, a_tr, u_tr).mean()))
            out["curves"].setdefault(name, []).append(curve)
            k += 1
    out["baseline"] = mean_predictor_error(u_tr, u_te)
    return out


@claim(paper=PAPER.key, title="On Darcy flow (1-D N=128, 2-D 32x32) MgNO's test relative L2 error is <= that of an "
       "FNO with the same number of parameters (within 10%) trained for the same number of epochs",
       timeouts={"quick": 900})
def vs_fno(run: ClaimRun) -> Evidence:
    seeds = run.seeds(run.pick(smoke=2, quick=2, full=3))
    cfg1 = run.pick(
        smoke=dict(n=32, n_train=16, n_test=8, epochs=1, batch=8, hidden=4, levels=3, modes=8),
        quick=dict(n=128, n_train=400, n_test=100, epochs=12, batch=20, hidden=16, levels=5, modes=16),
        full=dict(n=128, n_train=1000, n_test=200, epochs=300, batch=8, hidden=16, levels=5, modes=16),
    )
    cfg2 = run.pick(
        smoke=dict(n=16, n_train=8, n_test=4, epochs=1, batch=4, hidden=4, levels=2, modes=(4, 4)),
        quick=dict(n=32, n_train=160, n_test=40, epochs=6, batch=10, hidden=16, levels=4, modes=(8, 8)),
        full=dict(n=64, n_train=1000, n_test=200, epochs=200, batch=8, hidden=16, levels=5, modes=(12, 12)),
    )
    loss = run.pick(smoke="l2", quick="l2", full="h1")
    for c, terms in ((cfg1, 32), (cfg2, 16)):
        c.update(lr=1e-3, loss=loss, n_terms=terms, n_sub=8 if c is cfg1 else 4)
    r1 = _compare(run, 1, cfg1, seeds, (0.0, 0.4))
    r2 = _compare(run, 2, cfg2, seeds, (0.4, 1.0))
    ci1 = paired_bootstrap_ci(r1["mgno"], r1["fno"])
    ci2 = paired_bootstrap_ci(r2["mgno"], r2["fno"])
    passed = bool(ci1.high <= 0 and ci2.high <= 0)
    p_ratio = {d: r["fno_params"] / r["mgno_params"] for d, r in (("1d", r1), ("2d", r2))}
    learned = {f"{d} {m} learned": Check(f"{d} {m} test error / mean-predictor error",
                                         float(np.mean(r[m])) / r["baseline"], "<=", 0.5)
               for d, r in (("1-D", r1), ("2-D", r2)) for m in ("mgno", "fno")}
    pre = {**learned,
           "1-D parameters within 10%": Check("1-D |P_FNO/P_MgNO - 1|", abs(p_ratio["1d"] - 1), "<=", 0.1),
           "2-D parameters within 10%": Check("2-D |P_FNO/P_MgNO - 1|", abs(p_ratio["2d"] - 1), "<=", 0.1)}

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, r, title in ((axes[0], r1, f"1-D Darcy, N={cfg1['n']}"), (axes[1], r2, f"2-D Darcy, {cfg2['n']}^2")):
        for name, color in (("mgno", "C0"), ("fno", "C1")):
            for i, curve in enumerate(r["curves"][name]):
                ax.semilogy(np.arange(1, len(curve) + 1), curve, color=color, alpha=0.8,
                            label=f"{name.upper()} ({r[name + '_params']} params) train loss" if i == 0 else None)
            ax.axhline(np.mean(r[name]), color=color, ls="--", label=f"{name.upper()} test {np.mean(r[name]):.4f}")
        ax.set(xlabel="epoch", ylabel="relative L2", title=title)
        ax.legend(fontsize=7)
    metrics = {
        "mgno_test_1d": r1["mgno"], "fno_test_1d": r1["fno"], "mgno_test_2d": r2["mgno"], "fno_test_2d": r2["fno"],
        "mgno_train_1d": r1["mgno_train"], "fno_train_1d": r1["fno_train"],
        "mgno_train_2d": r2["mgno_train"], "fno_train_2d": r2["fno_train"],
        "diff_ci_1d": ci1.to_json(), "diff_ci_2d": ci2.to_json(),
        "mgno_params_1d": r1["mgno_params"], "fno_params_1d": r1["fno_params"], "fno_width_1d": r1["fno_width"],
        "mgno_params_2d": r2["mgno_params"], "fno_params_2d": r2["fno_params"], "fno_width_2d": r2["fno_width"],
        "mean_predictor_1d": r1["baseline"], "mean_predictor_2d": r2["baseline"],
        "epochs_1d": cfg1["epochs"], "epochs_2d": cfg2["epochs"], "loss": loss,
    }
    return Evidence(
        metrics=metrics,
        criterion="in 1-D and in 2-D the paired bootstrap CI over seeds of (MgNO test relL2 - FNO test relL2) has "
                  "its upper bound <= 0",
        passed=passed,
        preconditions=pre,
        headline=(Check("1-D MgNO - FNO test error (CI high)", ci1.high, "<=", 0.0),
                  Check("2-D MgNO - FNO test error (CI high)", ci2.high, "<=", 0.0)),
        figures={"mgno_vs_fno": fig},
        notes=f"Darcy -div(a grad u) = 1, a = 12/3 thresholded GRF functions, FV reference. MgNO: {cfg1['hidden']} "
              f"channels, 4 layers, {cfg1['levels']}/{cfg2['levels']} levels, official smoothing (1,0)/level and "
              "(2,0) coarsest, data restriction, zero padding. FNO: our implementation, 4 layers, grid embedding, "
              f"projection 128, modes {cfg1['modes']} / {cfg2['modes']}, width chosen to match MgNO's parameter "
              f"count. Both: Adam lr {cfg1['lr']}, wd 1e-4, OneCycle, {loss} relative loss, equal epochs, "
              "scalar normalisers. At quick scale both models are far from converged (the paper trains 500 epochs "
              "on GPU); the research notes measured FNO ahead at CPU budgets.",
    )
