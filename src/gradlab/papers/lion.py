"""Symbolic Discovery of Optimization Algorithms (arXiv 2302.06675).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.

Claim ``lion_vs_adamw``: at an equal tuning budget (the same learning-rate grid for both) on a task with
fresh samples every step, tuned Lion's held-out loss is within 10% of tuned AdamW's at a 3-10x smaller
learning rate, the gap shrinks as the batch grows, and Lion's optimizer state takes half of AdamW's bytes;
decided over seeds on bootstrap confidence intervals.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, bootstrap_ci, claim, paired_bootstrap_ci
from gradlab.optim.lion import Lion

PAPER = Paper(
    key="lion",
    title="Symbolic Discovery of Optimization Algorithms",
    short_title="Lion (symbolic discovery)",
    cluster="optim",
    arxiv="2302.06675",
    components=("gradlab.optim.lion", "gradlab.optim._foreach", "gradlab.optim.search"),
    statement=("A program search over update rules discovers Lion (sign of an interpolated momentum), which matches "
               "or beats AdamW at a 3-10x smaller learning rate with half the optimizer memory, its advantage "
               "growing with the batch size."),
    revisions=(
        Revision(
            claim="lion_vs_adamw",
            date="2026-12-01",
            old=("(one seed) at every batch size lion_loss <= 1.10 * adamw_loss and 3 <= lr_adamw/lr_lion <= 10 (best lr "
                 "of each on the same grid); gap(largest batch) < gap(smallest batch); 0.45 <= state_bytes_lion/"
                 "state_bytes_adamw <= 0.55"),
            new=("over run.seeds (quick: 3): at every batch size the upper 95% bootstrap CI bound of the mean gap "
                 "(lion_loss/adamw_loss - 1) <= 0.10 and 3 <= geometric-mean lr_adamw/lr_lion <= 10; the lower CI "
                 "bound of the paired mean of gap(smallest batch) - gap(largest batch) > 0; state ratio unchanged"),
            reason=("The gap trend and the 10% margin rested on one draw; a margin must be decided on a CI over seeds "
                    "(issue 9, 1)."),
            old_result=("passed (one seed): b128 gap 0.025, gap(b512) < gap(b32), state ratio within [0.45, 0.55]"),
        ),
    ),
)

GAP_MAX = 0.10  # Lion's tuned loss within 10% of AdamW's

IN_DIM, HIDDEN, N_CLASSES = 32, 128, 10
TEACHER_SCALE = 6.0  # teacher logit scale: Bayes-optimal held-out cross-entropy ~0.8 nats
ADAMW_WD, LION_WD = 0.01, 0.1  # the paper's guidance: Lion's decay 3-10x larger than AdamW's


def make_teacher(seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A fixed random two-layer tanh network giving the class logits of the online task."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(IN_DIM, 64, generator=g) / math.sqrt(IN_DIM)
    w2 = torch.randn(64, N_CLASSES, generator=g) / math.sqrt(64)
    return lambda x: TEACHER_SCALE * torch.tanh(x @ w1) @ w2


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first 10% of steps, then cosine decay to 0 (the same shape for both optimizers)."""
    warm = max(1, steps // 10)
    return lambda i: (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=ADAMW_WD, foreach=True)
    return Lion(params, lr=lr, weight_decay=LION_WD)


def train_online(name: str, lr: float, batch: int, steps: int, seed: int, teacher) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Train a 32-128-10 GELU MLP on fresh teacher-labelled samples every step (no sample is seen twice)."""
    data = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed + 2)  # same student initialisation for every run
    student = nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, N_CLASSES))
    opt = make_optimizer(name, student.parameters(), lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    for _ in range(steps):
        x = torch.randn(batch, IN_DIM, generator=data)
        with torch.no_grad():
            y = torch.multinomial(torch.softmax(teacher(x), -1), 1, generator=data).squeeze(1)
        loss = nn.functional.cross_entropy(student(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return student, opt


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes held by the tensors in ``opt.state`` (measured on the live optimizer, step counters included)."""
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def _one_seed(seed: int, steps: int, batches, grid_k, n_eval: int, progress) -> dict[str, object]:
    """Both optimizers over the lr grid at every batch size for one seed (teacher, data and init from ``seed``)."""
    teacher = make_teacher(seed)
    xe = torch.randn(n_eval, IN_DIM, generator=torch.Generator().manual_seed(seed + 10_000))
    with torch.no_grad():
        ye = torch.multinomial(torch.softmax(teacher(xe), -1), 1,
                               generator=torch.Generator().manual_seed(seed + 10_001)).squeeze(1)
        pe = torch.softmax(teacher(xe), -1)
        bayes = float(-(pe * pe.clamp_min(1e-30).log()).sum(-1).mean())

    def held_out(model: nn.Module) -> float:
        with torch.no_grad():
            loss = float(nn.functional.cross_entropy(model(xe), ye))
        return loss if math.isfinite(loss) else float("inf")

    losses = {(name, b): [] for name in ("adamw", "lion") for b in batches}
    state_bytes: dict[str, int] = {}
    total, done = 2 * len(batches) * len(grid_k), 0
    for b in batches:
        for name in ("adamw", "lion"):
            for k in grid_k:
                model, opt = train_online(name, 10 ** (-4 + k / 4), b, steps, seed, teacher)
                losses[(name, b)].append(held_out(model))
                state_bytes[name] = optimizer_state_bytes(opt)
                done += 1
                progress(done / total, f"batch {b}, {name}, lr 1e{-4 + k / 4:.2f}")
    out: dict[str, object] = {"bayes": bayes, "losses": losses, "state_bytes": state_bytes}
    for b in batches:
        ia, il = int(np.argmin(losses[("adamw", b)])), int(np.argmin(losses[("lion", b)]))
        a, lion = losses[("adamw", b)][ia], losses[("lion", b)][il]
        out[b] = {"adamw_loss": a, "lion_loss": lion, "gap": lion / a - 1,
                  "lr_ratio": 10 ** ((grid_k[ia] - grid_k[il]) / 4),  # exact grid ratio (10**1.0 == 10.0)
                  "adamw_lr": 10 ** (-4 + grid_k[ia] / 4), "lion_lr": 10 ** (-4 + grid_k[il] / 4),
                  "edge": ia in (0, len(grid_k) - 1) or il in (0, len(grid_k) - 1)}
    return out


@claim(paper=PAPER.key, title="Tuned Lion within 10% of tuned AdamW at a 3-10x smaller lr; gap shrinks with batch; half the state",
       timeouts={"smoke": 120, "quick": 900})
def lion_vs_adamw(run: ClaimRun) -> Evidence:
    steps = run.pick(smoke=20, quick=300, full=1000)
    batches = run.pick(smoke=(16, 64), quick=(32, 128, 512), full=(32, 128, 512, 2048))
    grid_k = run.pick(smoke=(4, 8), quick=tuple(range(13)), full=tuple(range(13)))  # lr = 10**(-4 + k/4)
    n_eval = run.pick(smoke=256, quick=4096, full=16384)
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    results = []
    for i, seed in enumerate(seeds):
        results.append(_one_seed(seed, steps, batches, grid_k, n_eval,
                                 lambda f, m, i=i: run.progress((i + f) / len(seeds), f"seed {i + 1}/{len(seeds)}: {m}")))

    metrics: dict[str, object] = {"seeds": len(seeds), "steps": steps, "lr_grid": [10 ** (-4 + k / 4) for k in grid_k],
                                  "bayes_loss": [r["bayes"] for r in results]}
    within, ratio_ok, headline = [], [], []
    for b in batches:
        gaps = [r[b]["gap"] for r in results]
        ratios = [r[b]["lr_ratio"] for r in results]
        ci_gap = bootstrap_ci(gaps)
        geo_ratio = float(10 ** np.mean(np.log10(ratios)))
        within.append(ci_gap.high <= GAP_MAX)
        ratio_ok.append(3 <= geo_ratio <= 10)
        metrics.update({
            f"b{b}_gap_per_seed": gaps, f"b{b}_gap_ci": ci_gap.to_json(), f"b{b}_gap": ci_gap.mean,
            f"b{b}_lr_ratio_per_seed": ratios, f"b{b}_lr_ratio_geomean": geo_ratio,
            f"b{b}_adamw_loss": [r[b]["adamw_loss"] for r in results], f"b{b}_lion_loss": [r[b]["lion_loss"] for r in results],
            f"b{b}_adamw_lr": [r[b]["adamw_lr"] for r in results], f"b{b}_lion_lr": [r[b]["lion_lr"] for r in results],
            f"b{b}_adamw_excess_over_bayes": [r[b]["adamw_loss"] - r["bayes"] for r in results],
            f"b{b}_best_lr_at_grid_edge": any(r[b]["edge"] for r in results),
        })
    worst_gap_high = max(float(metrics[f"b{b}_gap_ci"]["high"]) for b in batches)
    trend = paired_bootstrap_ci([r[batches[0]]["gap"] for r in results], [r[batches[-1]]["gap"] for r in results])
    metrics["gap_small_minus_large_ci"] = trend.to_json()
    state = results[0]["state_bytes"]
    state_ratio = state["lion"] / state["adamw"]
    metrics.update({"lion_state_bytes": state["lion"], "adamw_state_bytes": state["adamw"],
                    "state_bytes_ratio": state_ratio})
    passed = all(within) and all(ratio_ok) and trend.above(0.0) and 0.45 <= state_ratio <= 0.55
    headline = (Check("largest upper CI bound of the gap over batch sizes", worst_gap_high, "<=", GAP_MAX),
                Check(f"lower CI bound of gap(b{batches[0]}) - gap(b{batches[-1]})", trend.low, ">", 0.0),
                Check("state bytes Lion / AdamW", state_ratio, "<=", 0.55))

    losses0 = results[0]["losses"]
    fig = Figure(figsize=(4 * len(batches) + 3, 3.8))
    axes = fig.subplots(1, len(batches) + 1, gridspec_kw={"width_ratios": [4] * len(batches) + [2.5]})
    lrs = [10 ** (-4 + k / 4) for k in grid_k]
    for ax, b in zip(axes, batches):
        for name, color in (("adamw", "tab:blue"), ("lion", "tab:red")):
            ys = np.minimum(np.array(losses0[(name, b)]), 3.0)
            ax.plot(lrs, ys, "o-", color=color, ms=3, label={"adamw": "AdamW", "lion": "Lion"}[name])
        ax.axhline(results[0]["bayes"], ls=":", color="0.4", label="Bayes floor")
        ci = metrics[f"b{b}_gap_ci"]
        ax.set(xscale="log", xlabel="peak learning rate", ylabel="held-out cross-entropy (clipped at 3)",
               title=f"batch {b} (seed 1): gap over seeds {100 * ci['mean']:.1f}% "
                     f"[{100 * float(ci['low']):.1f}, {100 * float(ci['high']):.1f}]")
        ax.legend(fontsize=7)
    ax = axes[-1]
    ax.bar(["AdamW", "Lion"], [state["adamw"] / 1024, state["lion"] / 1024], color=["tab:blue", "tab:red"])
    ax.set(ylabel="optimizer state (KiB, measured)", title=f"state ratio {state_ratio:.3f}")
    fig.tight_layout()

    return Evidence(
        metrics=metrics,
        criterion=(f"over {len(seeds)} seeds (95% bootstrap CIs): at every batch size the upper CI bound of the mean "
                   f"gap lion_loss/adamw_loss - 1 <= {GAP_MAX} and 3 <= geometric-mean lr_adamw/lr_lion <= 10 (best "
                   "lr of each on the same grid); the lower CI bound of the paired mean gap(smallest batch) - "
                   "gap(largest batch) > 0; 0.45 <= state_bytes_lion/state_bytes_adamw <= 0.55"),
        passed=bool(passed),
        headline=headline,
        figures={"lr_sweeps": fig},
        notes=(
            f"Online teacher-student task: x ~ N(0, I_32), labels sampled from a random tanh teacher (logit scale "
            f"{TEACHER_SCALE}, a new teacher per seed), fresh samples every step; student MLP 32-128-10 GELU; {steps} "
            f"steps, 10% linear warm-up then cosine; AdamW wd={ADAMW_WD}, Lion wd={LION_WD} (fixed, per the paper's "
            f"guidance); both tuned over the same {len(grid_k)}-point quarter-decade lr grid (equal budget) per seed; "
            f"held-out loss = cross-entropy on {n_eval} held-out samples with sampled labels. State bytes summed over "
            "the tensors in optimizer.state after training. Small-scale stand-in for the paper's ImageNet/LM "
            "experiments."
        ),
    )


# ---- Lion's *system*: the program search that found it (gradlab.optim.search) ----------------------------------

import time  # noqa: E402

from gradlab.optim import search as program_search  # noqa: E402


@claim(paper=PAPER.key, title="Program search from SGD-momentum finds an update rule that beats SGD-momentum",
       timeouts={"quick": 900})
def program_search_beats_sgd_momentum(run: ClaimRun) -> Evidence:
    search = program_search
    scale = run.pick(smoke=0.15, quick=1.0)
    budget = run.pick(smoke=16, quick=400)
    tasks = search.default_funnel(seed=run.seed, scale=scale)
    largest = tasks[-1]
    heldout = search.ProxyTask(largest.kind, n_features=largest.n_features, n_classes=largest.n_classes,
                               hidden=largest.hidden, n_train=largest.n_train, n_test=largest.n_test,
                               steps=max(2, int(round(300 * scale))), batch_size=largest.batch_size,
                               seed=run.seed + 100)
    t0 = time.perf_counter()
    result = search.regularized_evolution(
        tasks, seed_program=search.sgd_momentum_program(0.9), population_size=16, tournament_size=4,
        max_evaluations=budget, batch_size=8, max_length=8, rng=run.seed,
        progress=lambda f, m: run.progress(0.9 * f, m))
    best = result.best_program
    run.progress(0.92, "held-out task")
    sgdm_ho = search.evaluate_on_task(search.sgd_momentum_program(0.9), heldout)
    best_ho = search.evaluate_on_task(best, heldout)
    lion_ref = [search.evaluate_on_task(search.lion_program(), t).loss for t in tasks]
    ratios = list(result.best.ratios) + [math.inf] * (len(tasks) - len(result.best.ratios))
    heldout_ratio = best_ho.loss / sgdm_ho.loss
    passed = bool(all(r < 1.0 for r in ratios) and heldout_ratio < 1.0)
    source = search.to_source(best)

    fig = Figure(figsize=(11, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    ev, br = zip(*result.history)
    ax1.plot(ev, br, marker=".")
    ax1.axhline(1.0, color="k", ls="--", lw=0.8, label="SGD-momentum")
    ax1.set(xlabel="programs proposed", ylabel="mean loss ratio to SGD-momentum (best)",
            title="regularized evolution with funnel selection")
    ax1.legend()
    names = [f"task {i} ({t.kind})" for i, t in enumerate(tasks)] + ["held-out"]
    sg = list(result.seed.losses) + [sgdm_ho.loss]
    fb = list(result.best.losses) + [math.nan] * (len(tasks) - len(result.best.losses)) + [best_ho.loss]
    lr_ = lion_ref + [search.evaluate_on_task(search.lion_program(), heldout).loss]
    xs = range(len(names))
    ax2.bar([x - 0.27 for x in xs], sg, width=0.27, label="SGD-momentum (tuned lr)")
    ax2.bar(list(xs), fb, width=0.27, label="found program (tuned lr)")
    ax2.bar([x + 0.27 for x in xs], lr_, width=0.27, label="Lion (reference, tuned lr)")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels(names, fontsize=8)
    ax2.set(ylabel="held-out cross-entropy", title="tuned losses per task")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return Evidence(
        metrics={
            "funnel_loss_ratios": ratios,
            "heldout_loss_ratio": heldout_ratio,
            "sgdm_losses": list(result.seed.losses), "best_losses": list(result.best.losses),
            "lion_reference_losses": lion_ref, "heldout_sgdm_loss": sgdm_ho.loss, "heldout_best_loss": best_ho.loss,
            "programs_proposed": result.n_proposed, "programs_evaluated": result.n_evaluated,
            "duplicates_skipped": result.n_duplicates, "best_program_length": len(best),
            "best_uses_sign": any(s.op == "sign" for s in best.statements),
            "best_program": source, "seconds": time.perf_counter() - t0,
        },
        criterion="max(funnel_loss_ratios) < 1 and heldout_loss_ratio < 1  (found program's tuned loss / "
                  "SGD-momentum's tuned loss, on every funnel task and on a held-out task)",
        passed=passed,
        headline=(Check("largest funnel loss ratio (found / SGD-momentum)", max(ratios), "<", 1.0),
                  Check("held-out loss ratio (found / SGD-momentum)", heldout_ratio, "<", 1.0)),
        figures={"program_search": fig},
        notes=("Regularized evolution (population 16, tournament 4, programs of <= 8 statements over the typed DSL of "
               "gradlab.optim.search) warm-started from SGD-momentum; funnel of 3 proxy tasks (softmax d=10, softmax "
               "d=30, MLP) with badly scaled features; every program is scored at its best lr of a 9-point log grid; "
               f"{budget} programs proposed. Held-out: the MLP task with new data/init seed and 2x steps. The paper "
               "searched with AdamW as warm start, TPU-scale budgets and restarts; here the budget is tiny, so the "
               "found rule is simple. Found program:\n" + source),
    )
