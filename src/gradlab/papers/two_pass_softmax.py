"""The Two-Pass Softmax Algorithm (Dukhan & Ablavatski, arXiv 2001.04438).

The paper computes softmax in two passes over memory instead of three by producing every exponential in
extended-exponent form, m * 2^n with n a float, and summing in that form, so that no maximum is needed. It reports
that on out-of-cache inputs the two-pass kernel is faster than both three-pass kernels (up to 28 % with AVX-512),
because softmax of a long vector is bound by memory bandwidth, while in cache the reloading three-pass kernel (one
exponential per element instead of two) is faster.

Claim ``out_of_cache`` (criterion fixed in issue 12 before any run): single-threaded, float32, inputs uniform in
[-1000, 1000]; one vector of at least 4x the last-level cache (read from the machine) and one that fits in L2;
the three numba kernels, ``torch.softmax`` (its ``out=`` form, so no allocation is timed) and the bandwidth sweeps
``sum(x)``, ``y = c x``, ``y *= c`` timed round-robin in one process; medians of per-call thread CPU time (wall
time is reported beside it).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, bootstrap_ci, claim
from gradlab.kernels import (cache_sizes, interleaved_times, last_level_cache, softmax_three_pass_recompute,
                             softmax_three_pass_reload, softmax_two_pass, stream_read, stream_scale,
                             stream_scale_inplace)

PAPER = Paper(
    key="two-pass-softmax",
    title="The Two-Pass Softmax Algorithm",
    short_title="Two-pass softmax",
    cluster="numerics",
    arxiv="2001.04438",
    components=("gradlab.kernels.softmax", "gradlab.kernels._softmax_numba", "gradlab.kernels.bandwidth"),
    statement=("Computing softmax in two memory passes with extended-exponent sums (no maximum) makes it faster than "
               "the three-pass algorithms on out-of-cache inputs, where softmax is bound by memory bandwidth."),
    revisions=(
        Revision(
            claim="out_of_cache", date="2026-12-02",
            old="out-of-cache input of 8x the last-level cache at quick scale (x, y, z and a float64 reference of "
                "the whole input for the agreement check)",
            new="4x the LLC at quick (16x at full), capped so that x, y and z take at most 0.4 of the available "
                "memory; a precondition requires >= 4x LLC (else inconclusive); agreement checked on the first "
                "2^22 inputs",
            reason="on a machine reporting a 480 MiB LLC the 8x input needed about 32 GB and the worker was killed "
                   "by the OOM killer; capped at 6x LLC (3 GB per array) the claim took 230 s, over the 3-minute "
                   "quick budget, hence 4x, the criterion's own minimum; the criterion (timing ratios, >= 4x LLC) "
                   "is unchanged",
            old_result="error: worker process died (exit code -9, OOM killer) on a 2-core 24 GB machine; with the "
                       "cap at 6x LLC: failed (t_recompute / t_two_pass 1.035 < 1.1), 230 s"),
    ),
)

SPEEDUP_MIN = 1.1
"""Out of cache, each three-pass kernel must take at least 1.1x the two-pass kernel's median time."""
BANDWIDTH_FRACTION_MIN = 0.8
"""Out of cache, (t_read + t_scale) / t_two_pass must be at least 0.8 (the kernel is near the bandwidth floor)."""
INPUT_RANGE = 1000.0
KERNELS = ("two_pass", "recompute", "reload", "torch")
SWEEPS = ("read", "scale", "inplace")


def _torch_softmax_out(xt: torch.Tensor, yt: torch.Tensor):
    """``torch.softmax`` over the last dim written into a preallocated tensor (no allocation inside the timing)."""
    op = torch.ops.aten._softmax.out
    return lambda: op(xt, -1, False, out=yt)


def _callables(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> dict:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return {
        "two_pass": lambda: softmax_two_pass(x, out=y),
        "recompute": lambda: softmax_three_pass_recompute(x, out=y),
        "reload": lambda: softmax_three_pass_reload(x, out=y),
        "torch": _torch_softmax_out(xt, yt),
        "read": lambda: stream_read(x),
        "scale": lambda: stream_scale(x, y, 0.5),
        "inplace": lambda: stream_scale_inplace(z, 1.0),
    }


def _cpu_description() -> dict:
    """CPU model and vector ISA as LLVM (numba's code generator) sees them."""
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features()
        isa = "avx512f" if feats.get("avx512f") else "avx2" if feats.get("avx2") else "sse/other"
        cpu_name = llvm.get_host_cpu_name()
    except Exception:  # pragma: no cover - llvmlite is a numba dependency
        isa, cpu_name = "unknown", "unknown"
    return {"cpu_model": model, "llvm_cpu": cpu_name, "widest_isa": isa}


AGREE_N_MAX = 2**22
"""The kernels' agreement is checked on the first ``AGREE_N_MAX`` inputs' own softmax (same code path at any n)."""
MIN_LLC_FACTOR = 4.0
"""The out-of-cache input must be at least this many times the last-level cache (the criterion's ">= 4x LLC")."""
MEMORY_FRACTION = 0.4
"""The out-of-cache arrays (x, y, z: 12 bytes per element) take at most this share of the available memory."""


def _available_memory() -> int:
    """Bytes the kernel reports as available (``MemAvailable``), else the free physical pages."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _out_of_cache_size(llc: int, factor: float, available: int) -> int:
    """``factor`` x LLC in float32 elements, capped so that x, y and z fit in ``MEMORY_FRACTION`` of ``available``
    (a 480 MiB LLC at 8x needs 12 GB for the three arrays: the claim was killed by the OOM killer)."""
    return max(1024, min(int(factor * llc) // 4, int(MEMORY_FRACTION * available) // 12))


def _measure(n: int, rounds: int, repeats: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-INPUT_RANGE, INPUT_RANGE, n).astype(np.float32)
    y = np.zeros(n, dtype=np.float32)  # zeros() pages are touched by the first write; warm-up calls touch them
    z = np.ones(n, dtype=np.float32)
    xa = x[:AGREE_N_MAX]
    ref = softmax_three_pass_recompute(xa).astype(np.float64)
    agree = max(float(np.abs(softmax_two_pass(xa) - ref).max()),
                float(np.abs(softmax_three_pass_reload(xa) - ref).max()))
    del ref
    return interleaved_times(_callables(x, y, z), rounds=rounds, repeats=repeats), agree


def _summary(t, n: int, clock: str) -> dict:
    med = {k: t.median(k, clock) for k in KERNELS + SWEEPS}
    out = {f"median_s_{k}": v for k, v in med.items()}
    out["ratio_recompute_over_two_pass"] = med["recompute"] / med["two_pass"]
    out["ratio_reload_over_two_pass"] = med["reload"] / med["two_pass"]
    out["ratio_torch_over_two_pass"] = med["torch"] / med["two_pass"]
    out["bandwidth_fraction_two_pass"] = (med["read"] + med["scale"]) / med["two_pass"]
    out["bandwidth_fraction_recompute"] = (2 * med["read"] + med["scale"]) / med["recompute"]
    out["bandwidth_fraction_reload"] = (med["read"] + med["scale"] + med["inplace"]) / med["reload"]
    out["read_sweep_GBps"] = 4 * n / med["read"] / 1e9
    out["two_pass_Gelem_per_s"] = n / med["two_pass"] / 1e9
    return out


@claim(paper=PAPER.key, title="Out of cache the two-pass softmax is >= 1.1x faster than both three-pass kernels and "
                              "near the memory bandwidth; in cache the reloading kernel is fastest",
       timeouts={"smoke": 180, "quick": 600, "full": 1800})
def out_of_cache(run: ClaimRun) -> Evidence:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _out_of_cache(run)
    finally:
        torch.set_num_threads(threads)


def _out_of_cache(run: ClaimRun) -> Evidence:
    llc, llc_source = last_level_cache()
    levels, _ = cache_sizes()
    l2 = levels.get(2, 256 * 2**10) if llc_source != "default" else 256 * 2**10
    factor = run.pick(smoke=0.25, quick=4, full=16)  # smoke only proves the code path (not out of cache)
    available = _available_memory()
    n_out = _out_of_cache_size(llc, factor, available)
    n_in = max(1024, min(l2 // 16, 2**16))  # x, y (and the in-place buffer) take at most 3/4 of L2
    rounds = run.pick(smoke=3, quick=21, full=41)
    repeats_in = max(1, run.pick(smoke=2**18, quick=2**22, full=2**22) // n_in)  # ~4 M elements per in-cache sample

    run.progress(0.05, f"out of cache: n={n_out} ({4 * n_out / 2**20:.0f} MiB, {factor:g}x LLC)")
    t_out, agree_out = _measure(n_out, rounds, 1, run.seed)
    run.progress(0.7, f"in cache: n={n_in}")
    t_in, agree_in = _measure(n_in, rounds, repeats_in, run.seed + 1)

    out_cpu, out_wall = _summary(t_out, n_out, "cpu"), _summary(t_out, n_out, "wall")
    in_cpu, in_wall = _summary(t_in, n_in, "cpu"), _summary(t_in, n_in, "wall")
    r_rec = out_cpu["ratio_recompute_over_two_pass"]
    r_rel = out_cpu["ratio_reload_over_two_pass"]
    frac = out_cpu["bandwidth_fraction_two_pass"]
    med_in = {k: in_cpu[f"median_s_{k}"] for k in ("two_pass", "recompute", "reload")}
    reload_fastest_in_cache = med_in["reload"] < med_in["two_pass"] and med_in["reload"] < med_in["recompute"]
    passed = (r_rec >= SPEEDUP_MIN and r_rel >= SPEEDUP_MIN and frac >= BANDWIDTH_FRACTION_MIN
              and reload_fastest_in_cache)

    per_round = {
        "recompute_over_two_pass": t_out.cpu["recompute"] / t_out.cpu["two_pass"],
        "reload_over_two_pass": t_out.cpu["reload"] / t_out.cpu["two_pass"],
    }
    metrics: dict = {
        "llc_bytes": llc, "llc_source": llc_source, "l2_bytes": l2, "n_out_of_cache": n_out,
        "available_memory_bytes": available, "llc_factor_asked": factor,
        "out_of_cache_bytes_over_llc": 4 * n_out / llc, "n_in_cache": n_in, "rounds": rounds,
        "repeats_in_cache": repeats_in, "clock": "thread CPU time (wall time reported as *_wall)",
        "ratio_recompute_over_two_pass": r_rec, "ratio_reload_over_two_pass": r_rel,
        "bandwidth_fraction_two_pass": frac, "reload_fastest_in_cache": reload_fastest_in_cache,
        "in_cache_two_pass_over_reload": med_in["two_pass"] / med_in["reload"],
        "in_cache_recompute_over_reload": med_in["recompute"] / med_in["reload"],
        "max_abs_diff_to_recompute": max(agree_out, agree_in),
        # compute-bound check: in-cache two-pass throughput vs the rate the measured bandwidth would allow (12 B/elem)
        "in_cache_two_pass_Gelem_per_s": in_cpu["two_pass_Gelem_per_s"],
        "bandwidth_limited_two_pass_Gelem_per_s": out_cpu["read_sweep_GBps"] / 12.0,
        "theory_bound_recompute_over_two_pass": (16 / 12, 20 / 16),
        "theory_bound_reload_over_two_pass": (20 / 12, 24 / 16),
        "out_of_cache": out_cpu, "out_of_cache_wall": out_wall, "in_cache": in_cpu, "in_cache_wall": in_wall,
        **_cpu_description(),
    }
    for name, vals in per_round.items():
        if len(vals) >= 2:
            metrics[f"per_round_ratio_{name}_ci"] = bootstrap_ci(vals, seed=run.seed).to_json()

    fig = _figure(out_cpu, in_cpu, per_round, n_out, n_in)
    return Evidence(
        metrics=metrics,
        criterion=(f"out of cache (>= 4x LLC; here {4 * n_out / llc:.0f}x), medians of thread CPU time over {rounds} "
                   f"interleaved rounds: t_recompute / t_two_pass >= {SPEEDUP_MIN} and t_reload / t_two_pass >= "
                   f"{SPEEDUP_MIN} and (t_read + t_scale) / t_two_pass >= {BANDWIDTH_FRACTION_MIN}; and in cache "
                   "t_reload < t_two_pass and t_reload < t_recompute"),
        passed=bool(passed),
        preconditions={
            "last-level cache size read from the machine": llc_source != "default",
            f"out-of-cache input >= {MIN_LLC_FACTOR:g}x LLC within {MEMORY_FRACTION:g} of the available memory":
                Check("out-of-cache bytes / LLC", 4 * n_out / llc, ">=",
                      MIN_LLC_FACTOR if run.scale != "smoke" else 0.0),
            "kernels agree (max |y_two_pass - y_recompute|, |y_reload - y_recompute|)":
                Check("max abs difference", max(agree_out, agree_in), "<=", 1e-6),
        },
        headline=(Check("out of cache: t_recompute / t_two_pass", r_rec, ">=", SPEEDUP_MIN),
                  Check("out of cache: t_reload / t_two_pass", r_rel, ">=", SPEEDUP_MIN),
                  Check("out of cache: bandwidth fraction of two-pass", frac, ">=", BANDWIDTH_FRACTION_MIN)),
        figures={"times": fig},
        notes=(f"numba kernels (AVX width of this CPU), 1 thread, float32, x ~ U[-{INPUT_RANGE:.0f}, "
               f"{INPUT_RANGE:.0f}]; LLC {llc / 2**20:.1f} MiB from {llc_source}; out-of-cache n={n_out}, in-cache "
               f"n={n_in} x {repeats_in} calls per sample. torch.softmax is timed as aten._softmax.out (three-pass, "
               "reported, not part of the criterion). Bandwidth fraction = (sum(x) sweep + y=c*x sweep) / two-pass, "
               "from the same interleaved rounds. If the in-cache two-pass throughput is below the bandwidth-limited "
               "rate (read GB/s / 12 B), the kernels are compute-bound on this machine and the two-pass advantage "
               "cannot appear; both numbers are in the metrics."),
    )


def _figure(out_cpu: dict, in_cpu: dict, per_round: dict, n_out: int, n_in: int) -> Figure:
    fig = Figure(figsize=(11, 4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    names = list(KERNELS)
    for ax, summ, title in ((ax1, out_cpu, f"out of cache (n={n_out:,})"), (ax2, in_cpu, f"in cache (n={n_in:,})")):
        t2 = summ["median_s_two_pass"]
        vals = [summ[f"median_s_{k}"] / t2 for k in names]
        bars = ax.bar(names, vals, color=["tab:red", "tab:blue", "tab:green", "0.5"])
        floor = (summ["median_s_read"] + summ["median_s_scale"]) / t2
        ax.axhline(floor, ls=":", color="k", label=f"bandwidth floor of two-pass ({floor:.2f})")
        ax.axhline(1.0, color="tab:red", lw=0.8)
        if "out" in title:
            ax.axhline(SPEEDUP_MIN, ls="--", color="tab:orange", label=f"criterion x{SPEEDUP_MIN}")
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set(title=title, ylabel="median CPU time / two-pass")
        ax.legend(fontsize=7)
    for name, vals in per_round.items():
        ax3.plot(np.arange(len(vals)), vals, "o-", ms=3, label=name.replace("_", " "))
    ax3.axhline(SPEEDUP_MIN, ls="--", color="tab:orange")
    ax3.axhline(1.0, color="k", lw=0.8)
    ax3.set(title="out of cache, per round", xlabel="round", ylabel="time ratio")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    return fig
