"""Time one optimizer ``step()`` of gradlab's Lion, DiffGrad, AdaGradNorm and ProgramOptimizer (fused, foreach and
for-loop paths) against ``torch.optim.AdamW(fused=True)``, side by side on the same 50-parameter-tensor models of
~1M and ~25M parameters, and check the single-pass targets of issue 14.

    OMP_NUM_THREADS=1 python benchmarks/optim_step.py [--sizes 1M,25M] [--device cpu] [--mechanisms]
    OMP_NUM_THREADS=1 python benchmarks/optim_step.py --width 256 --layers 25   # one custom size

Method. Candidates are timed *interleaved*: in every round each candidate runs ``torch.utils.benchmark.Timer``
for ~``--block`` seconds, in an order rotated every round, and its time is the median over rounds; the anchor
(torch's fused AdamW) runs in every chunk of candidates, and a ratio is the median over rounds of the candidate's
time / the anchor's time in the same round (on a shared machine absolute times move by 2x within minutes; such
per-round ratios move far less; before 2026-12-02 a ratio was one of two medians). All candidates read the same
fixed random gradients (no optimizer writes them) and step on their own copy of the parameters.

Memory-traffic limit. A fused step that reads ``r`` and writes ``w`` arrays of ``N`` float32 entries moves
``(r + w) * 4N`` bytes; its limit is the time of ``dst.copy_(src)`` moving the same bytes (``src`` and ``dst`` of
``(r + w) N / 2`` entries each), measured in the same rounds. ``step / limit`` <= 1.3 is the target. (A copy also
pays the write-allocate read of ``dst``, which in-place updates do not, so a fused step can beat its "limit".)
Traffic per element: AdamW 7 (p, g, m, v in; p, m, v out); Lion 6 (the finite-gradient check reads g once before
the 5-array update); DiffGrad 9 (p, g, m, v, g_prev in; p, m, v, g_prev out); AdaGradNorm 4 (g for the norm, then
p, g in, p out).

Compile time is printed separately (the first step of each candidate: state allocation plus the numba kernel
compile or cache load, or the Inductor compile) and is not in the step times. ``--mechanisms`` adds the fused
steps compiled by Inductor's C++ backend (the CUDA code path run on the CPU) for the mechanism comparison in
``gradlab.optim._fused``. The profile section times every fused step on a cache-resident model (8K entries per
tensor): that is its arithmetic cost per entry; the difference to the full size is memory time.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils import benchmark

from gradlab.optim import AdaGradNorm, DiffGrad, Lion, _fused
from gradlab.optim.search import ProgramOptimizer, lion_program

# 25 square layers (weight + bias = 50 tensors): width 200 -> ~1.0M parameters, width 1000 -> ~25M.
SIZES = {"1M": 200, "25M": 1000}
ANCHOR = "torch AdamW fused (anchor)"
TARGETS = {"gradlab Lion fused": 0.75, "gradlab Lion fused, check_finite=False": 0.75,
           "gradlab AdaGradNorm fused": 0.6, "gradlab DiffGrad fused": 1.1}
LIMIT_TARGET = 1.3


@dataclass
class Candidate:
    name: str
    make: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    arrays: int | None = None  # arrays moved per element by a single-pass step (None: not a fused path)
    backend: str = "numba"  # the CPU fused mechanism while this candidate steps


def candidates(mechanisms: bool) -> list[Candidate]:
    c = [
        Candidate(ANCHOR, lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True), 7),
        Candidate("gradlab Lion fused", lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1, fused=True), 6),
        Candidate("gradlab Lion fused, check_finite=False",
                  lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1, fused=True, check_finite=False), 5),
        Candidate("gradlab DiffGrad fused", lambda ps: DiffGrad(ps, lr=1e-3, weight_decay=0.01,
                                                                decoupled_weight_decay=True, fused=True), 9),
        Candidate("gradlab AdaGradNorm fused", lambda ps: AdaGradNorm(ps, lr=1e-2, fused=True), 4),
        Candidate("torch AdamW foreach", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, foreach=True)),
        Candidate("gradlab Lion foreach", lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1, foreach=True)),
        Candidate("gradlab Lion for-loop", lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1, foreach=False)),
        Candidate("gradlab DiffGrad foreach", lambda ps: DiffGrad(ps, lr=1e-3, weight_decay=0.01,
                                                                  decoupled_weight_decay=True, foreach=True)),
        Candidate("gradlab DiffGrad for-loop", lambda ps: DiffGrad(ps, lr=1e-3, weight_decay=0.01,
                                                                   decoupled_weight_decay=True, foreach=False)),
        Candidate("gradlab AdaGradNorm foreach", lambda ps: AdaGradNorm(ps, lr=1e-2, foreach=True)),
        Candidate("gradlab AdaGradNorm for-loop", lambda ps: AdaGradNorm(ps, lr=1e-2, foreach=False)),
        Candidate("ProgramOptimizer(Lion) foreach", lambda ps: ProgramOptimizer(ps, lion_program(), lr=1e-4,
                                                                                weight_decay=0.1, foreach=True)),
        Candidate("ProgramOptimizer(Lion) for-loop", lambda ps: ProgramOptimizer(ps, lion_program(), lr=1e-4,
                                                                                 weight_decay=0.1, foreach=False)),
        Candidate("ProgramOptimizer(Lion) fused", lambda ps: ProgramOptimizer(ps, lion_program(), lr=1e-4,
                                                                              weight_decay=0.1, fused=True)),
    ]
    if mechanisms:
        c += [
            Candidate("Lion fused via Inductor C++", lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1, fused=True), 6,
                      backend="compile"),
            Candidate("DiffGrad fused via Inductor C++", lambda ps: DiffGrad(
                ps, lr=1e-3, weight_decay=0.01, decoupled_weight_decay=True, fused=True), 9, backend="compile"),
            Candidate("AdaGradNorm fused via Inductor C++", lambda ps: AdaGradNorm(ps, lr=1e-2, fused=True), 4,
                      backend="compile"),
        ]
    try:
        import pytorch_optimizer as po

        c.append(Candidate("pytorch_optimizer Lion foreach",
                           lambda ps: po.Lion(ps, lr=1e-4, weight_decay=0.1, foreach=True)))
        c.append(Candidate("pytorch_optimizer DiffGrad foreach",
                           lambda ps: po.DiffGrad(ps, lr=1e-3, weight_decay=0.01, foreach=True)))
    except ImportError:
        pass
    return c


def model_tensors(width: int, layers: int, device: str, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [s for _ in range(layers) for s in ((width, width), (width,))]
    return [torch.randn(s, generator=gen).to(device) for s in shapes]


def numba_compiles() -> tuple[int, int]:
    """(cache misses = compilations, cache hits) of the fused numba kernels so far in this process."""
    k = _fused._load_kernels()
    if k is None:
        return 0, 0
    fns = [k.first_nonfinite, k.lion_step, k.diffgrad_step, k.sum_squares, k.adagradnorm_step]
    return (sum(sum(f.stats.cache_misses.values()) for f in fns), sum(sum(f.stats.cache_hits.values()) for f in fns))


def with_backend(backend: str, fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        old = _fused.set_backend("cpu", backend)
        try:
            fn()
        finally:
            _fused.set_backend("cpu", old)
    return run


def build(cand: Candidate, init: list[torch.Tensor], grads: list[torch.Tensor]) -> tuple[Callable[[], None], float,
                                                                                          int]:
    """The candidate's step callable, its first-step seconds and state bytes."""
    params = [nn.Parameter(t.clone()) for t in init]
    for p, g in zip(params, grads):
        p.grad = g
    opt = cand.make(params)
    step = with_backend(cand.backend, opt.step)
    t0 = time.perf_counter()
    step()  # creates the state; compiles or loads the kernels
    first = time.perf_counter() - t0
    nbytes = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    return step, first, nbytes


def interleaved_samples(fns: dict[str, Callable[[], None]], rounds: int, block: float) -> dict[str, list[float]]:
    """Seconds per call of each callable in each of ``rounds`` interleaved rounds (order rotated each round)."""
    timers, number = {}, {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-6)
        number[name] = max(1, int(block / once))
        timers[name] = benchmark.Timer(stmt="fn()", globals={"fn": fn}, label="optimizer step", sub_label=name)
    samples: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(timers[name].timeit(number[name]).mean)
    return samples


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, block: float) -> dict[str, float]:
    """Median seconds per call of each callable over ``rounds`` interleaved rounds."""
    return {n: statistics.median(v) for n, v in interleaved_samples(fns, rounds, block).items()}


def round_ratios(samples: dict[str, list[float]], anchor: str) -> dict[str, float]:
    """Per callable: the median over rounds of its time / the anchor's time in the same round. On a shared machine
    whose speed drifts between rounds (measured: 2x within minutes), this moves less than a ratio of two medians."""
    base = samples[anchor]
    return {n: statistics.median(a / b for a, b in zip(v, base)) for n, v in samples.items()}


def copy_callable(n_elements: int, device: str) -> Callable[[], None]:
    src = torch.randn(n_elements, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def run_size(width: int, layers: int, device: str, rounds: int, block: float, mechanisms: bool) -> tuple:
    n = layers * (width * width + width)
    print(f"\n=== torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, {2 * layers} "
          f"parameter tensors, {n / 1e6:.2f}M parameters (float32) ===")
    init = model_tensors(width, layers, device, seed=0)
    grads = model_tensors(width, layers, device, seed=1)
    cands = candidates(mechanisms)
    fused = [c for c in cands if c.arrays is not None]
    others = [c for c in cands if c.arrays is None]
    rows: dict[str, tuple[float, float, float, int]] = {}  # name -> (time, ratio to the chunk's anchor, first, bytes)
    limits: dict[str, float] = {}
    chunks = [fused] + [others[i:i + 4] for i in range(0, len(others), 4)]
    for ci, chunk in enumerate(chunks):
        if ci > 0:
            chunk = [fused[0]] + chunk  # the anchor in every chunk
        fns, firsts, nbytes = {}, {}, {}
        for cand in chunk:
            before = numba_compiles()
            try:
                fns[cand.name], firsts[cand.name], nbytes[cand.name] = build(cand, init, grads)
            except (RuntimeError, ValueError, TypeError, ImportError) as err:  # e.g. fused on an unsupported device
                print(f"  {cand.name}: skipped ({type(err).__name__}: {err})")
                continue
            misses, hits = (a - b for a, b in zip(numba_compiles(), before))
            if misses or hits:
                print(f"  {cand.name}: first step {firsts[cand.name]:.2f} s (numba kernels: {misses} compiled, "
                      f"{hits} loaded from the disk cache)")
            else:
                print(f"  {cand.name}: first step {firsts[cand.name]:.2f} s")
        if ci == 0:
            for k in sorted({c.arrays for c in chunk if c.arrays}):
                fns[f"copy_ moving {k} arrays"] = copy_callable(k * n // 2, device)
        samples = interleaved_samples(fns, rounds, block)
        times = {n: statistics.median(v) for n, v in samples.items()}
        ratios = round_ratios(samples, ANCHOR) if ANCHOR in samples else {}
        for name, t in times.items():
            if name.startswith("copy_"):
                limits[name] = t
            elif name != ANCHOR or ci == 0:
                rows[name] = (t, ratios.get(name, float("nan")), firsts[name], nbytes[name])
        del fns
        gc.collect()
    print(f"\n{'optimizer':38s} {'ms/step':>9s} {'vs AdamW fused':>15s} {'limit ms':>9s} {'step/limit':>11s} "
          f"{'first step s':>13s} {'state MiB':>10s}")
    arrays = {c.name: c.arrays for c in cands}
    for name, (t, ratio, first, nb) in rows.items():
        lim = limits.get(f"copy_ moving {arrays.get(name)} arrays")
        lim_txt = f"{1e3 * lim:9.3f} {t / lim:11.2f}" if lim else f"{'':9s} {'':11s}"
        print(f"{name:38s} {1e3 * t:9.3f} {ratio:14.2f}x {lim_txt} {first:13.2f} {nb / 2**20:10.2f}")
    for k_name, lim in limits.items():
        print(f"{k_name:38s} {1e3 * lim:9.3f}")
    print("\ntargets (issue 14):")
    for name, target in TARGETS.items():
        if name not in rows:
            print(f"  {name}: not measured")
            continue
        t, ratio, _, _ = rows[name]
        lim = limits[f"copy_ moving {arrays[name]} arrays"]
        ok = ratio <= target and t / lim <= LIMIT_TARGET
        bound = lim / rows[ANCHOR][0]
        print(f"  {name}: {ratio:.2f}x AdamW fused (target <= {target}), {t / lim:.2f}x its memory-traffic limit "
              f"(target <= {LIMIT_TARGET}) -> {'MET' if ok else 'MISSED'}; a step at exactly its limit would be "
              f"{bound:.2f}x AdamW fused")
    eager = min((rows[n][0] for n in rows if n.startswith("ProgramOptimizer") and "fused" not in n), default=None)
    if eager is not None and "ProgramOptimizer(Lion) fused" in rows:
        t, _, first, _ = rows["ProgramOptimizer(Lion) fused"]
        gain = eager - t
        txt = f"pays off after {first / gain:,.0f} steps" if gain > 0 else "never pays off (not faster)"
        print(f"  ProgramOptimizer compiled: {1e3 * t:.3f} ms vs {1e3 * eager:.3f} ms eager (best path), compile "
              f"{first:.1f} s -> {txt}")
        print(f"  (its program is Lion's update without the finite-gradient check, 5 arrays instead of 6: "
              f"{rows['ProgramOptimizer(Lion) fused'][1]:.2f}x AdamW fused)")
    fused_limits = {name: limits[f"copy_ moving {arrays[name]} arrays"] for name in TARGETS if name in rows}
    return n, rows, fused_limits


def profile(device: str, rounds: int, block: float, sizes: list[int]) -> None:
    """Where a fused step's time goes: the fixed per-step cost (Python, validation, dispatch; a 50-tensor model of
    1 entry per tensor), the arithmetic per entry (2 cache-resident tensors of 16K entries, minus the fixed cost
    of 2 tensors), and the memory time per entry at each size (its copy_ limit)."""
    print("\nprofile (where the time goes):")
    fixed50, fixed2, small = {}, {}, {}
    for cand in candidates(False):
        if cand.arrays is None:
            continue
        fixed50[cand.name] = build(cand, [torch.randn(1, device=device) for _ in range(50)],
                                   [torch.randn(1, device=device) for _ in range(50)])[0]
        fixed2[cand.name] = build(cand, [torch.randn(1, device=device) for _ in range(2)],
                                  [torch.randn(1, device=device) for _ in range(2)])[0]
        small[cand.name] = build(cand, [torch.randn(16384, device=device) for _ in range(2)],
                                 [torch.randn(16384, device=device) for _ in range(2)])[0]
    sig = torch.randn(32768, device=device)
    fns = {**{f"{n} |50x1": f for n, f in fixed50.items()}, **{f"{n} |2x1": f for n, f in fixed2.items()},
           **{f"{n} |2x16K": f for n, f in small.items()}, "sigmoid_ |2x16K": lambda: sig.sigmoid_()}
    t = interleaved(fns, rounds, block)
    print(f"  {'optimizer':30s} {'fixed ms (50 tensors)':>22s} {'arithmetic ns/entry':>20s}")
    for name in fixed50:
        arith = (t[f"{name} |2x16K"] - t[f"{name} |2x1"]) / 32768
        print(f"  {name:30s} {1e3 * t[f'{name} |50x1']:22.3f} {1e9 * arith:20.3f}")
    print(f"  {'torch.sigmoid_ (reference)':30s} {'':22s} {1e9 * t['sigmoid_ |2x16K'] / 32768:20.3f}")
    for n, rows, limits in sizes:
        print(f"  at {n / 1e6:.0f}M entries: measured ns/entry (memory limit ns/entry): " + ", ".join(
            f"{name.split()[1]} {1e9 * rows[name][0] / n:.2f} ({1e9 * limits[name] / n:.2f})" for name in limits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1M,25M", help=f"comma-separated presets from {sorted(SIZES)}")
    ap.add_argument("--width", type=int, default=None, help="custom layer width (overrides --sizes)")
    ap.add_argument("--layers", type=int, default=25)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds per chunk of candidates")
    ap.add_argument("--block", type=float, default=0.06, help="seconds per candidate and round")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the targets are for 1)")
    ap.add_argument("--mechanisms", action="store_true",
                    help="also time the fused steps compiled by Inductor (C++ on the CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.width is not None:
        widths = [args.width]
    else:
        unknown = [s for s in args.sizes.split(",") if s not in SIZES]
        if unknown:
            ap.error(f"--sizes: unknown preset(s) {unknown}; choose from {sorted(SIZES)}")
        widths = [SIZES[s] for s in args.sizes.split(",")]
    results = [run_size(width, args.layers, args.device, args.rounds, args.block, args.mechanisms) for width in widths]
    profile(args.device, args.rounds, args.block, results)


if __name__ == "__main__":
    main()
