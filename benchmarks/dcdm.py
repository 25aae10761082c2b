"""DCDM vs CG, IC(0)-PCG and AMG-PCG: iterations to relative residual 1e-6 on the 2-D Dirichlet Poisson problem.

One DCDMNet is trained at 32^2 exactly as in the dcdm claims' quick scale (16 channels, 4 levels, Adam 1e-3, batch 16,
800 steps on the DST-I Ritz data set), then every solver runs on b = A randn and b = randn at 32^2, 64^2 and 128^2.
The paper's statement is that DCDM's iteration count stays flat while CG's grows (~n); the table prints each
method's iterations, its growth its(n)/its(32) beside the target (DCDM <= 1.5, the size_independent claim's bound),
and the median wall time of a solve relative to CG's, all measured in this one process, solvers interleaved.

Run: ``OMP_NUM_THREADS=1 python benchmarks/dcdm.py [--steps 800] [--sizes 32 64 128] [--repeats 3] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy.sparse.linalg import cg
from torch.utils.benchmark import Timer

from gradlab.operators.dcdm import DCDMNet, GridLaplacian, dirichlet_ritz_rhs, net_direction, train_dcdm
from gradlab.operators.krylov import amg_preconditioner, dcdm, ichol0

TOL = 1e-6
GROWTH_TARGET = 1.5


def iterations(solve) -> tuple[int, int]:
    calls = [0]

    def cb(_):
        calls[0] += 1

    _, info = solve(cb)
    return calls[0], int(info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--train-n", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--maxiter", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    torch.manual_seed(args.seed)
    net = DCDMNet(dim=2, channels=16, levels=4)
    gen = torch.Generator().manual_seed(args.seed)
    n0 = args.train_n
    rhs = dirichlet_ritz_rhs((n0, n0), 4096, generator=gen).float()
    t0 = time.perf_counter()
    losses = train_dcdm(net, GridLaplacian((n0, n0)), rhs, steps=args.steps, batch_size=16, lr=1e-3, generator=gen)
    print(f"trained DCDMNet at {n0}^2 for {args.steps} steps in {time.perf_counter() - t0:.1f} s "
          f"(loss {np.mean(losses[:10]):.3g} -> {np.mean(losses[-10:]):.3g})")

    rows = []
    for n in args.sizes:
        lap = GridLaplacian((n, n))
        A = lap.matrix
        direction = net_direction(net, lap)
        M_ic, M_amg = ichol0(A), amg_preconditioner(A)
        solvers = {
            "DCDM": lambda b, cb: dcdm(A, b, direction=direction, rtol=TOL, maxiter=args.maxiter, callback=cb),
            "CG": lambda b, cb: cg(A, b, rtol=TOL, callback=cb),
            "IC(0)-PCG": lambda b, cb: cg(A, b, rtol=TOL, M=M_ic, callback=cb),
            "AMG-PCG": lambda b, cb: cg(A, b, rtol=TOL, M=M_amg, callback=cb),
        }
        for kind in ("A randn", "randn"):
            z = np.random.default_rng([args.seed, n, 0 if kind == "A randn" else 1]).standard_normal(lap.n)
            b = A @ z if kind == "A randn" else z
            its = {name: iterations(lambda cb, s=s: s(b, cb)) for name, s in solvers.items()}
            times: dict[str, list[float]] = {name: [] for name in solvers}
            for _ in range(args.repeats):  # interleaved
                for name, s in solvers.items():
                    times[name].append(Timer("s(b, None)", globals={"s": s, "b": b}).timeit(1).mean)
            med = {name: statistics.median(v) for name, v in times.items()}
            rows.append((n, kind, its, med))

    names = ["DCDM", "CG", "IC(0)-PCG", "AMG-PCG"]
    print(f"\niterations to relative residual {TOL:g} (* = not converged within maxiter {args.maxiter})")
    print(f"{'n':>5} {'b':>8} " + " ".join(f"{m:>10}" for m in names) + "   " +
          " ".join(f"{'t/t_CG ' + m:>17}" for m in names if m != "CG"))
    for n, kind, its, med in rows:
        cells = [f"{its[m][0]}{'*' if its[m][1] != 0 else ''}" for m in names]
        ratios = [f"{med[m] / med['CG']:17.2f}" for m in names if m != "CG"]
        print(f"{n:>5} {kind:>8} " + " ".join(f"{c:>10}" for c in cells) + "   " + " ".join(ratios))

    base = args.sizes[0]
    print(f"\ngrowth its(n) / its({base}) (mean over both b); target for DCDM <= {GROWTH_TARGET}")
    print(f"{'n':>5} " + " ".join(f"{m:>10}" for m in names))
    mean_its = {(n, m): np.mean([r[2][m][0] for r in rows if r[0] == n]) for n in args.sizes for m in names}
    for n in args.sizes:
        print(f"{n:>5} " + " ".join(f"{mean_its[(n, m)] / mean_its[(base, m)]:10.2f}" for m in names))
    last = args.sizes[-1]
    g = mean_its[(last, "DCDM")] / mean_its[(base, "DCDM")]
    print(f"\nDCDM growth {base}->{last}: {g:.2f} (target <= {GROWTH_TARGET}: {'met' if g <= GROWTH_TARGET else 'NOT met'}); "
          f"CG growth {mean_its[(last, 'CG')] / mean_its[(base, 'CG')]:.2f}")


if __name__ == "__main__":
    main()
