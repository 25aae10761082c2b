"""Training-procedure benchmarks (gradlab.training), each method side by side with its anchor in one process.

One function per method (``bench_<name>``), registered in ``BENCHES``; ``--only`` picks some. Timings are medians
of ``torch.utils.benchmark.Timer.blocked_autorange``; the table prints ratios to the anchor measured in the same
run.

* ``tract``: one SGD-momentum training step (zero_grad, forward, cross-entropy, backward, step) of a small CNN whose
  first conv is wrapped in ``TrAct`` vs the same CNN with a plain first conv (targets from the issue: <= 1.15x; and
  <= 1.05x of ``torch_tract``, installed by the test extra). Two models: a CIFAR-sized CNN on 3×32×32 inputs and
  the digits CNN of the TrAct claim. The variants are timed in 7 interleaved rounds and the ratio is the median of
  the per-round ratios (timing them one after the other, as before, had torch_tract at 1.03x plain while both
  implementations were at 1.3x in the same rounds). Measured 2026-12-02 (1 thread, the other core busy): CIFAR
  1.10-1.14x plain (torch_tract 1.22x), digits 1.26-1.35x (torch_tract 1.37x). On the digits CNN a step takes
  1.5 ms, of which ATen's convolution backward alone took ~0.3 ms however little it computes; TrAct now gets
  G^T X there from one GEMM on its patch matrix (gradlab.training.tract): measured again 2026-12-02, other core idle,
  digits 1.10x and 1.13x plain (two runs; torch_tract 1.43-1.49x), CIFAR 1.09-1.11x (unchanged path).
* ``sso``: one SSO outer step (m = 1 and 5 inner steps) vs one torch.optim.SGD step (target m = 1 <= 1.1x), in 7
  interleaved rounds. Measured 2026-12-02: 1.18x while m = 1 ran two backward passes (grad_z, then J^T grad_z) and
  two ``isfinite(...).all()`` checks; 1.01x with one backward pass for both and one ``sum(t * 0)`` check.
* ``wta-crs``: ``WTACRSLinear`` (keep 0.3) vs ``nn.Linear`` on an 8192×512 input → 2048 features: bytes autograd
  saves for backward (Parameters excluded; target <= keep + 0.02 of nn.Linear's) and one forward + backward step
  with an input that requires grad (target <= 1.2x).

* ``noprop``: NoProp-DT's block-by-block training step vs chained backprop through the same 10 blocks: peak bytes
  saved for backward in one step (target <= 0.3x) and step time.
* ``bench-loop``: the overhead of ``gradlab.bench``'s trial loop (:func:`gradlab.bench.timing.run_trial`: clock
  reads, eval scheduling, budget checks, bookkeeping) against a bare loop calling the same submission functions
  (``data_selection``, ``update_params``, ``prepare_for_eval`` every eval period) the same number of times, on
  built-in workloads with an unreachable target (every trial runs its full step budget; evals, off the clock, are
  excluded from both). Target: <= 5% (ratio <= 1.05). Also printed: the trial's own clock against the bare loop.

    OMP_NUM_THREADS=1 python benchmarks/training.py [--only tract,wta-crs,noprop] [--min-run-time 1.0]
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn
from torch.utils import benchmark

from gradlab.training import TrAct, WTACRSLinear, saved_tensor_bytes


def _median(stmt: Callable[[], object], label: str, sub_label: str, min_run_time: float) -> float:
    timer = benchmark.Timer(stmt="fn()", globals={"fn": stmt}, label=label, sub_label=sub_label)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def _interleaved(steps: dict[str, Callable[[], object]], anchor: str, min_run_time: float,
                 rounds: int = 7) -> dict[str, tuple[float, float]]:
    """Per variant: (median time of one call, median over rounds of its time / the anchor's in the same round).

    Each round times every variant once, one after the other, so a change in machine load between rounds
    moves the anchor and the variant together; the ratio is decided per round, not from two separate runs."""
    per_round = max(min_run_time / rounds, 0.05)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
            times[name].append(timer.blocked_autorange(min_run_time=per_round).median)
    med = {name: float(torch.tensor(v).median()) for name, v in times.items()}
    ratio = {name: float((torch.tensor(v) / torch.tensor(times[anchor])).median()) for name, v in times.items()}
    return {name: (med[name], ratio[name]) for name in steps}


def _print_rows(title: str, rows: list[tuple[str, float, str]], anchor: str) -> None:
    base = next(t for n, t, _ in rows if n == anchor)
    print(f"\n{title}")
    print(f"  {'variant':44s} {'ms':>9s} {'vs ' + anchor:>24s}  extra")
    for name, t, extra in rows:
        print(f"  {name:44s} {1e3 * t:9.3f} {t / base:23.3f}x  {extra}")


# --- TrAct -------------------------------------------------------------------------------------------------------

def _cifar_cnn(first: nn.Module) -> nn.Module:
    return nn.Sequential(first, nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _digits_cnn(first: nn.Module) -> nn.Module:
    return nn.Sequential(first, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 10))


def _tract_variants(make_first: Callable[[], nn.Conv2d]) -> dict[str, Callable[[], nn.Module]]:
    variants: dict[str, Callable[[], nn.Module]] = {
        "plain first conv (anchor)": make_first,
        "gradlab TrAct(conv, 0.1)": lambda: TrAct(make_first(), 0.1),
    }
    try:  # the official package, when installed
        import torch_tract  # type: ignore[import-not-found]

        variants["torch_tract TrAct(conv, 0.1)"] = lambda: torch_tract.TrAct(make_first(), 0.1)
    except ImportError:
        pass
    return variants


def bench_tract(min_run_time: float) -> None:
    setups = {
        "CIFAR-sized CNN, batch 64 x 3x32x32, conv1 3->32 3x3 (b = 65536, n = 27)":
            (_cifar_cnn, lambda: nn.Conv2d(3, 32, 3, padding=1), (64, 3, 32, 32)),
        "digits CNN, batch 64 x 1x8x8, conv1 1->16 3x3 (b = 4096, n = 9)":
            (_digits_cnn, lambda: nn.Conv2d(1, 16, 3, padding=1), (64, 1, 8, 8)),
    }
    for title, (body, make_first, shape) in setups.items():
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=gen)
        y = torch.randint(0, 10, (shape[0],), generator=gen)
        steps = {}
        for name, first in _tract_variants(make_first).items():
            torch.manual_seed(0)
            model = body(first())
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()

            step()
            steps[name] = step
        anchor = "plain first conv (anchor)"
        res = _interleaved(steps, anchor, 3 * min_run_time)
        print(f"\nTrAct training step: {title} (7 interleaved rounds; ratio = median of per-round ratios)")
        print(f"  {'variant':44s} {'ms':>9s} {'vs ' + anchor:>28s}")
        for name, (t, r) in res.items():
            print(f"  {name:44s} {1e3 * t:9.3f} {r:27.3f}x")
        ours, official = res["gradlab TrAct(conv, 0.1)"][1], res.get("torch_tract TrAct(conv, 0.1)", (0, None))[1]
        print(f"  target gradlab TrAct <= 1.15x plain: {'met' if ours <= 1.15 else 'NOT met'} ({ours:.3f}x)"
              + ("" if official is None else f"; <= 1.05x torch_tract: {'met' if ours / official <= 1.05 else 'NOT met'}"
                                              f" ({ours / official:.3f}x)"))
        if official is None:
            print("  (torch_tract not installed: the <= 1.05x comparison with the official package is not run)")


# --- WTA-CRS -----------------------------------------------------------------------------------------------------

def bench_wta_crs(min_run_time: float, keep: float = 0.3, n: int = 8192, d_in: int = 512, d_out: int = 2048) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=gen).requires_grad_(True)
    g = torch.randn(n, d_out, generator=gen)
    torch.manual_seed(0)
    exact = nn.Linear(d_in, d_out)
    wta = WTACRSLinear.from_linear(exact, keep=keep, generator=torch.Generator().manual_seed(0))
    rows = []
    saved = {}
    for name, layer in (("nn.Linear (anchor)", exact), (f"WTACRSLinear keep={keep}", wta)):
        nbytes, out = saved_tensor_bytes(lambda layer=layer: layer(x), modules=[layer])
        out.backward(g)  # also fills the gradient-norm cache used by the next step
        saved[name] = nbytes

        def step(layer: nn.Module = layer) -> None:
            x.grad = None
            layer.weight.grad = layer.bias.grad = None
            layer(x).backward(g)

        rows.append((name, _median(step, "WTA-CRS step", name, min_run_time), f"saved {nbytes / 2**20:.2f} MiB"))
    ratio = saved[f"WTACRSLinear keep={keep}"] / saved["nn.Linear (anchor)"]
    _print_rows(f"WTA-CRS linear {n}x{d_in} -> {d_out}, forward + backward (input requires grad)", rows,
                "nn.Linear (anchor)")
    print(f"  saved bytes ratio WTACRSLinear / nn.Linear: {ratio:.4f} (target <= keep + 0.02 = {keep + 0.02:.2f})")


# --- NoProp ------------------------------------------------------------------------------------------------------

def noprop_memory(min_run_time: float, T: int = 10, hidden: int = 128, batches: tuple[int, ...] = (128, 1024)) -> None:
    """NoProp-DT's block-by-block training step vs chained backprop through the same T blocks (digits-sized MLP
    blocks, 64 inputs, 10 classes): peak bytes autograd saves in one step (Parameters excluded; target <= 0.3x)
    and the step time (reported)."""
    from gradlab.training import NoPropDT

    for n in batches:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, 64, generator=gen)
        y = torch.randint(0, 10, (n,), generator=gen)
        rows, saved = [], {}
        for name in ("chained backprop (anchor)", "NoProp-DT block by block"):
            torch.manual_seed(0)
            model = NoPropDT(64, 10, T=T, hidden=hidden)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
            noise = torch.Generator().manual_seed(1)
            if name.startswith("NoProp"):
                def step(measure: bool = False, model: NoPropDT = model, opt: torch.optim.Optimizer = opt,
                         noise: torch.Generator = noise) -> dict[str, float]:
                    return model.training_step(x, y, opt, noise, measure_saved_bytes=measure)
            else:
                def step(measure: bool = False, model: NoPropDT = model,
                         opt: torch.optim.Optimizer = opt) -> dict[str, float]:
                    return model.backprop_step(x, y, opt, measure_saved_bytes=measure)
            saved[name] = step(True)["peak_saved_bytes"]
            rows.append((name, _median(step, "NoProp step", name, min_run_time),
                         f"peak saved {saved[name] / 2**20:.2f} MiB"))
        ratio = saved["NoProp-DT block by block"] / saved["chained backprop (anchor)"]
        _print_rows(f"NoProp-DT training step, T = {T} MLP blocks (hidden {hidden}), batch {n} x 64", rows,
                    "chained backprop (anchor)")
        print(f"  peak saved bytes ratio NoProp-DT / chained backprop: {ratio:.4f} (target <= 0.30)")


BENCHES: dict[str, Callable[[float], None]] = {"tract": bench_tract, "wta-crs": bench_wta_crs}
BENCHES["noprop"] = noprop_memory


# --- SSO ---------------------------------------------------------------------------------------------------------

def sso_step(min_run_time: float) -> None:
    """One SSO outer step with m = 1 inner SGD step (target <= 1.1x) and m = 5, vs one torch.optim.SGD step."""
    from gradlab.training.sso import SSO

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 64, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    steps: dict[str, Callable[[], object]] = {}
    for name, m in (("torch.optim.SGD (anchor)", 0), ("SSO m=1, inner sgd", 1), ("SSO m=5, inner sgd", 5),
                    ("SSO m=5, inner armijo", -5)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 10))
        if m == 0:
            opt = torch.optim.SGD(model.parameters(), lr=0.1)

            def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        else:
            sso = SSO(model.parameters(), eta=5.0, inner_steps=abs(m), inner="sgd" if m > 0 else "armijo",
                      inner_lr=0.1 if m > 0 else None)

            def step(model: nn.Module = model, sso: SSO = sso) -> None:
                sso.step(lambda: model(x), lambda z: nn.functional.cross_entropy(z, y))
        step()
        steps[name] = step
    anchor = "torch.optim.SGD (anchor)"
    res = _interleaved(steps, anchor, 4 * min_run_time)
    print("\nSSO outer step, tanh MLP 64-256-10, batch 64 (7 interleaved rounds; ratio = median of per-round ratios)")
    print(f"  {'variant':44s} {'ms':>9s} {'vs ' + anchor:>28s}")
    for name, (t, r) in res.items():
        print(f"  {name:44s} {1e3 * t:9.3f} {r:27.3f}x")
    ours = res["SSO m=1, inner sgd"][1]
    print(f"  target SSO m=1 <= 1.1x SGD: {'met' if ours <= 1.1 else 'NOT met'} ({ours:.3f}x)")


BENCHES["sso"] = sso_step


# --- gradlab bench's trial loop ----------------------------------------------------------------------------------

def bench_loop_overhead(min_run_time: float, workloads: tuple[str, ...] = ("teacher_regression", "digits_mlp"),
                        submission: str = "adamw", max_steps: int = 300) -> None:
    """``run_trial`` wall time minus its eval time vs a bare loop over the same submission calls (see above)."""
    import math
    import time

    from gradlab.bench.loading import load_submission, load_workload
    from gradlab.bench.timing import run_trial

    rows = []
    for name in workloads:
        base = type(load_workload(name))
        # never reached (every trial runs its full budget), no time limit, a fixed number of steps for both loops
        fixed = type(f"Fixed{base.__name__}", (base,), {
            "validation_target": math.inf if base.higher_is_better else -math.inf, "max_runtime_s": 1e9,
            "max_steps": max_steps})
        wl = fixed()
        sub = load_submission(submission)
        hp = sub.default_hyperparameters()
        period = wl.eval_period_steps

        def bare(wl=wl, sub=sub, hp=hp, period=period) -> float:
            model = wl.init_model(0)
            rng = torch.Generator().manual_seed(1)
            queue = wl.input_queue(int(sub.get_batch_size(wl.name)), 2)
            state = sub.init_optimizer_state(wl, model, hp, rng)
            t0 = time.perf_counter()
            for step in range(max_steps):
                batch = sub.data_selection(wl, queue, state, model, hp, step, rng)
                state = sub.update_params(wl, model, hp, batch, state, step, rng)
                if (step + 1) % period == 0 or step + 1 == max_steps:
                    state = sub.prepare_for_eval(wl, model, state, hp, step + 1, rng)
            return time.perf_counter() - t0

        def trial(wl=wl, sub=sub, hp=hp) -> tuple[float, float]:
            t0 = time.perf_counter()
            res = run_trial(wl, sub, hp, 0)
            total = time.perf_counter() - t0
            assert res.steps == max_steps, res.steps
            return total - res.eval_s, res.clock_s

        bare_t, trial_t, clock_t = [], [], []
        deadline = time.perf_counter() + max(min_run_time, 1.0) * 5
        while len(bare_t) < 5 or time.perf_counter() < deadline:  # interleaved rounds
            bare_t.append(bare())
            t, c = trial()
            trial_t.append(t)
            clock_t.append(c)
            if len(bare_t) >= 15:
                break
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        b, t, c = med(bare_t), med(trial_t), med(clock_t)
        rows.append((f"{name}: bare loop ({max_steps} steps)", b, ""))
        rows.append((f"{name}: run_trial minus evals", t, f"target <= 1.05x; {len(bare_t)} rounds"))
        rows.append((f"{name}: run_trial's clock", c, "what time-to-target measures"))
    print("\ngradlab bench trial loop vs a bare loop (medians of interleaved rounds; ratio per workload)")
    for i in range(0, len(rows), 3):
        base = rows[i][1]
        for label, v, extra in rows[i:i + 3]:
            print(f"  {label:48s} {1e3 * v:10.1f} ms {v / base:8.3f}x  {extra}")


BENCHES["bench-loop"] = bench_loop_overhead


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {sorted(BENCHES)}")
    ap.add_argument("--min-run-time", type=float, default=1.0)
    args = ap.parse_args()
    names = [s for s in args.only.split(",") if s]
    unknown = [s for s in names if s not in BENCHES]
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {unknown}; choose from {sorted(BENCHES)}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in names:
        BENCHES[name](args.min_run_time)


if __name__ == "__main__":
    main()
