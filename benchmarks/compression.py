"""Accuracy of JLCM vs k-means vs uniform quantisation at 2/3/4-bit indices, and k-means fitting time vs scikit-learn.

    OMP_NUM_THREADS=1 python benchmarks/compression.py [--bits 2,3,4] [--seeds 3] [--modes codebooks,scales]
    OMP_NUM_THREADS=1 python benchmarks/compression.py --small      # a fast pass (fewer samples, epochs, steps)

Task: the JLCM claim's (``gradlab.papers.jlcm``): an MLP 64-256-256-16 trained on ``make_classification``, all
three weight matrices compressed, 8 groups, storage measured from the packed form. For each bit width every
method runs on the same seeds, networks and calibration sets; the table prints means over seeds and the paired
difference JLCM − k-means in test accuracy beside its target (``>= 0``: "JLCM ≥ k-means"), plus layer-output
error and KL(fp || q). The second table times our batched torch 1-D k-means (all 8 groups of a 256×256 layer in
one call) against scikit-learn's ``KMeans`` run group by group, same ``n_init``, interleaved in one process
(``torch.utils.benchmark``), as a ratio.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.utils import benchmark

from gradlab.compression import kmeans_1d
from gradlab.papers.jlcm import METHODS, run_seed


def accuracy_table(bits_list: list[int], seeds: list[int], modes: list[str], sizes: dict) -> None:
    print(f"\nMLP 64-256-256-16, make_classification, 8 groups; seeds {seeds}; {sizes}")
    head = f"{'bits':>4} {'mode':>9} {'method':>8} {'b/w':>6} {'acc':>7} {'out-err':>8} {'KL':>8}"
    print(head + f"   {'acc JLCM - k-means [min, max over seeds]':>42}  target")
    for bits in bits_list:
        for mode in modes:
            runs = [run_seed(s, bits=bits, mode=mode, **sizes) for s in seeds]
            fp = np.mean([r["fp"]["accuracy"] for r in runs])
            for m in METHODS:
                if mode != modes[0] and m in ("uniform", "kmeans"):
                    continue  # baselines do not depend on the JLCM mode
                acc = np.array([r[m]["accuracy"] for r in runs])
                line = (f"{bits:>4} {mode:>9} {m:>8} {np.mean([r[m]['bits_per_weight'] for r in runs]):6.3f} "
                        f"{acc.mean():7.4f} {np.mean([r[m]['out_err'] for r in runs]):8.4f} "
                        f"{np.mean([r[m]['kl'] for r in runs]):8.4f}")
                if m == "jlcm":
                    d = acc - np.array([r["kmeans"]["accuracy"] for r in runs])
                    line += f"   {d.mean():+.4f} [{d.min():+.4f}, {d.max():+.4f}]{'':>14}  >= 0"
                    line += "  ok" if d.mean() >= 0 else "  MISSED"
                print(line)
            print(f"{bits:>4} {mode:>9} {'float':>8} {32.0:6.3f} {fp:7.4f}")


def kmeans_timing(bits: int, n_init: int, min_run_time: float) -> None:
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(0)
    w = torch.randn(256, 256, generator=g) * torch.linspace(0.5, 2.0, 256)[:, None]
    groups = w.view(8, -1)
    k = 2**bits

    def ours() -> None:
        kmeans_1d(groups, k, n_init=n_init, generator=torch.Generator().manual_seed(0))

    def sk() -> None:
        for row in groups.numpy():
            KMeans(k, n_init=n_init, random_state=0).fit(row.reshape(-1, 1))

    t_sk = benchmark.Timer("f()", globals={"f": sk}).blocked_autorange(min_run_time=min_run_time).median
    t_ours = benchmark.Timer("f()", globals={"f": ours}).blocked_autorange(min_run_time=min_run_time).median
    t_sk2 = benchmark.Timer("f()", globals={"f": sk}).blocked_autorange(min_run_time=min_run_time).median
    anchor = min(t_sk, t_sk2)
    print(f"{bits:>4} {k:>4} {anchor * 1e3:10.2f} {t_ours * 1e3:10.2f} {anchor / t_ours:8.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--modes", default="codebooks")
    ap.add_argument("--small", action="store_true", help="fewer samples, epochs and steps (a fast check)")
    ap.add_argument("--min-run-time", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bits_list = [int(b) for b in args.bits.split(",")]
    modes = args.modes.split(",")
    bad = [m for m in modes if m not in ("codebooks", "scales")]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from codebooks, scales")
    sizes = (dict(n_train=3000, n_test=1500, epochs=15, n_calib=512, steps=200) if args.small
             else dict(n_train=8000, n_test=4000, epochs=40, n_calib=1024, steps=400))
    accuracy_table(bits_list, list(range(args.seeds)), modes, sizes)
    print("\n1-D k-means of the 8 groups of a 256x256 layer, n_init=4 (medians, interleaved)")
    print(f"{'bits':>4} {'K':>4} {'sklearn ms':>10} {'ours ms':>10} {'speedup':>8}")
    for bits in bits_list:
        kmeans_timing(bits, 4, args.min_run_time)


if __name__ == "__main__":
    main()
