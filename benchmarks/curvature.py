"""Curvature toolkit benchmark, side by side with its anchors in one run.

1. Hessian-vector-product throughput: ``gradlab.curvature.HessianOperator.matmat`` (gradient graph built once with
   ``torch.func``, columns vectorised with ``vmap``) vs the naive loop that rebuilds the double-backward graph for
   every vector (``torch.autograd.grad(grad, params, v)`` with ``create_graph=True``).
2. Top Hessian eigenvalue: ``gradlab.curvature.lanczos`` (full reorthogonalization) vs
   ``scipy.sparse.linalg.eigsh(LinearOperator(hvp), k=1, which="LA")`` (ARPACK implicitly restarted Lanczos) on the
   *same* HVP operator; reports wall time, number of HVPs and the eigenvalues.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/curvature.py [--width 128] [--vectors 32] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from gradlab.curvature import HessianOperator, lanczos


def make_problem(width: int, n: int, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10))
    x, y = torch.randn(n, 20), torch.randint(0, 10, (n,))
    return model, nn.CrossEntropyLoss(), (x, y)


def naive_hvp(model, loss_fn, batch, V: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    cols = []
    for v in V.T:
        loss = loss_fn(model(batch[0]), batch[1])
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([g.reshape(-1) for g in grads])
        hv = torch.autograd.grad(flat, params, v)
        cols.append(torch.cat([h.reshape(-1) for h in hv]))
    return torch.stack(cols, dim=1)


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--vectors", type=int, default=32)
    ap.add_argument("--lanczos-iters", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    model, loss_fn, batch = make_problem(args.width, args.samples)
    P = sum(p.numel() for p in model.parameters())
    print(f"MLP 20-{args.width}-{args.width}-10, P = {P} parameters, batch = {args.samples}, threads = {torch.get_num_threads()}")
    V = torch.randn(P, args.vectors)

    # ---------------------------------------------------------------- 1. HVP throughput
    def ours():
        return HessianOperator(model, loss_fn, batch).matmat(V)  # includes building the gradient graph

    t_ours, hv_ours = best_time(ours, args.repeats)
    t_naive, hv_naive = best_time(lambda: naive_hvp(model, loss_fn, batch, V), args.repeats)
    err = float((hv_ours - hv_naive).abs().max() / hv_naive.abs().max())
    print("\n1) Hessian-vector products:", args.vectors, "vectors")
    print(f"{'method':<44}{'time [s]':>10}{'HVP/s':>10}")
    print(f"{'naive double-backward loop (anchor)':<44}{t_naive:>10.4f}{args.vectors / t_naive:>10.1f}")
    print(f"{'gradlab HessianOperator.matmat (vmap)':<44}{t_ours:>10.4f}{args.vectors / t_ours:>10.1f}")
    print(f"speed-up x{t_naive / t_ours:.2f}; max relative difference {err:.1e}")

    # ---------------------------------------------------------------- 2. top eigenvalue
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = HessianOperator(model, loss_fn, batch, dtype=torch.float64)
    op.matvec(torch.zeros(P, dtype=torch.float64))  # build the graph outside the timings
    counter = {"n": 0}

    def mv(x):
        counter["n"] += 1
        return op.matvec(torch.as_tensor(np.asarray(x).reshape(-1))).numpy()

    lin = LinearOperator((P, P), matvec=mv, dtype=np.float64)

    def run_scipy():
        counter["n"] = 0
        v0 = np.random.default_rng(0).standard_normal(P)
        return float(eigsh(lin, k=1, which="LA", tol=1e-6, v0=v0)[0][0]), counter["n"]

    def run_ours():
        res = lanczos(op, args.lanczos_iters, generator=torch.Generator().manual_seed(0))
        return float(res.top[0]), args.lanczos_iters

    t_sp, (lam_sp, n_sp) = best_time(run_scipy, args.repeats)
    t_la, (lam_la, n_la) = best_time(run_ours, args.repeats)
    print("\n2) Top Hessian eigenvalue on the same fp64 HVP operator")
    print(f"{'method':<44}{'time [s]':>10}{'HVPs':>8}{'lambda_max':>16}")
    print(f"{'scipy eigsh(k=1, LA, tol=1e-6) (anchor)':<44}{t_sp:>10.4f}{n_sp:>8d}{lam_sp:>16.10f}")
    print(f"{f'gradlab lanczos ({args.lanczos_iters} steps, full reorth.)':<44}{t_la:>10.4f}{n_la:>8d}{lam_la:>16.10f}")
    print(f"time ratio scipy/gradlab x{t_sp / t_la:.2f}; relative eigenvalue difference {abs(lam_la - lam_sp) / abs(lam_sp):.1e}")


if __name__ == "__main__":
    main()
