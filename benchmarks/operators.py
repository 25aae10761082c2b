"""MgNO vs FNO at equal parameters (arXiv 2310.19809), side by side in one process.

Trains :class:`gradlab.operators.MgNO` and our :class:`gradlab.operators.FNO` (width chosen so the parameter counts
agree within 10%) on the same Darcy data with the same optimiser, epochs and seed, then prints

1. the test relative-L2 ratio ``err(MgNO) / err(FNO)`` beside the paper's target (<= 1);
2. the training-step time ratio ``t(MgNO) / t(FNO)`` (``torch.utils.benchmark``, the two timed interleaved).

Ratios only, never absolute times. Run:
``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/operators.py [--ndim 1] [--epochs 20] [--n-train 400]``
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.utils.benchmark as tb

from gradlab.operators import DarcyCoefficient, MgNO, darcy_dataset, lp_loss
from gradlab.papers._operator_training import Normalised, fast_cpu_convs, fit, n_params, relative_errors
from gradlab.papers.mgno import _fno_matching


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ndim", type=int, default=1, choices=(1, 2))
    ap.add_argument("--n", type=int, default=None, help="resolution (default 128 in 1-D, 32 in 2-D)")
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    nd = args.ndim
    n = args.n or (128 if nd == 1 else 32)
    coef = DarcyCoefficient(args.n_train + args.n_test, nd, n_terms=32 if nd == 1 else 16, seed=args.seed)
    a, u = darcy_dataset(coef, n, n_sub=8 if nd == 1 else 4)
    a_tr, u_tr, a_te, u_te = a[:args.n_train], u[:args.n_train], a[args.n_train:], u[args.n_train:]

    torch.manual_seed(args.seed)
    mg = Normalised(MgNO(1, 1, 16, 4, 5 if nd == 1 else 4, ndim=nd), a_tr, u_tr)
    torch.manual_seed(args.seed)
    fno = Normalised(_fno_matching(n_params(mg.model), nd, 16 if nd == 1 else (8, 8)), a_tr, u_tr)
    p_mg, p_fno = n_params(mg.model), n_params(fno.model)
    print(f"{nd}-D Darcy, N={n}, {args.n_train} train / {args.n_test} test, {args.epochs} epochs, "
          f"threads={torch.get_num_threads()}")
    print(f"parameters: MgNO {p_mg}, FNO {p_fno} (ratio {p_fno / p_mg:.3f}, required within 10%)")

    errors = {}
    with fast_cpu_convs(nd):
        for name, model in (("MgNO", mg), ("FNO", fno)):
            fit(model, a_tr, u_tr, epochs=args.epochs, batch_size=args.batch, lr=1e-3, weight_decay=1e-4,
                seed=args.seed)
            errors[name] = float(np.mean(relative_errors(model, a_te, u_te)))
        xb, yb = a_tr[:args.batch], u_tr[:args.batch]

        def step(model):
            model.zero_grad(set_to_none=True)
            lp_loss(model(xb), yb).backward()

        timers = {name: tb.Timer("step(model)", globals={"step": step, "model": m}, num_threads=1)
                  for name, m in (("MgNO", mg), ("FNO", fno))}
        samples: dict[str, list[float]] = {k: [] for k in timers}
        for _ in range(5):  # interleaved rounds
            for name, timer in timers.items():
                samples[name].append(timer.timeit(3).median)
    t_ratio = float(np.median(samples["MgNO"]) / np.median(samples["FNO"]))
    print(f"\n{'model':<8}{'test relL2':>12}")
    for name, e in errors.items():
        print(f"{name:<8}{e:>12.4f}")
    ratio = errors["MgNO"] / errors["FNO"]
    print(f"\nerror ratio MgNO/FNO = {ratio:.3f}  (paper's target <= 1: {'met' if ratio <= 1 else 'NOT met'})")
    print(f"training-step time ratio MgNO/FNO = {t_ratio:.2f}  (interleaved medians)")


if __name__ == "__main__":
    main()
