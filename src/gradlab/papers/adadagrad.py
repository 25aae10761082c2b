"""AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods (arXiv 2402.11215).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, claim, paired_bootstrap_ci
from gradlab.optim.adagradnorm import AdaGradNorm
from gradlab.schedules.adaptive_batch import AdaptiveBatchSize
from gradlab.schedules.per_sample import per_sample_grads

PAPER = Paper(
    key="adadagrad",
    title="AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
    short_title="AdAdaGrad",
    cluster="optim",
    arxiv="2402.11215",
    components=("gradlab.optim.adagradnorm", "gradlab.schedules.adaptive_batch", "gradlab.schedules.per_sample"),
    statement=("Growing the batch size adaptively with adaptive-sampling tests (the norm test; a coordinate-wise "
               "variant for coordinate-wise AdaGrad) while updating with AdaGrad-Norm (AdAdaGrad-Norm, with an "
               "O(1/K) high-probability rate) or AdaGrad (AdAdaGrad) trains efficiently: far fewer optimizer steps "
               "than a small constant batch and no more samples than a large constant batch."),
    revisions=(
        Revision(
            claim="adaptive_batch_efficiency",
            date="2026-12-01",
            old=("adagrad_adaptive_steps < adagrad_small_steps and adagrad_adaptive_samples < adagrad_large_samples "
                 "(one seed; norm test eta = 1 chosen on this task; AdaGrad-Norm runs reported but not in the "
                 "verdict; no coordinate-wise test)"),
            new=("for each adaptive method - AdAdaGrad (AdaGrad + norm test), AdAdaGrad-Norm (AdaGrad-Norm + norm "
                 "test) and AdAdaGrad with the coordinate-wise norm test - the lower 95% bootstrap CI bound (over "
                 "seeds, paired) of mean log(steps_small / steps_adaptive) and of mean log(samples_large / "
                 "samples_adaptive) is > 0 (the baselines use the same inner optimizer and learning rate); eta = 0.1 "
                 "fixed a priori (the paper's value for its convex logistic-regression run and the official default)"),
            reason=("The scalar AdaGrad-Norm variant, the subject of the paper's theorem, failed the test and was "
                    "left out of the verdict; eta was chosen on this task while the baselines' lr was not tuned; the "
                    "coordinate-wise test of the paper was not used; one seed (issue 9, 2.10 and 1)."),
            old_result=("passed: adagrad_adaptive_steps 61 < adagrad_small_steps 2464, adagrad_adaptive_samples 5110 < "
                        "adagrad_large_samples 14848 (eta = 1; the AdaGrad-Norm adaptive run did not reach the target)"),
        ),
    ),
)

SMALL_BATCH = 8
LARGE_BATCH = 512
MAX_BATCH = 2048
ETA = 0.1                 # norm-test constant: the paper's logistic-regression value (official expt.sh, main.py default)
COORD_QUANTILE = 1.0      # coordinate-wise test: every coordinate must pass its own norm condition
ADAGRAD_LR = 0.5          # the same lr for every batch schedule of one inner optimizer
ADAGRADNORM_LR = 2.0
TARGET_FRACTION = 0.05    # target = L* + 5% of the initial excess loss L0 - L*
ADAPTIVE = {              # adaptive run -> (its small- and large-batch baselines' prefix, display name)
    "adagrad_adaptive": ("adagrad", "AdAdaGrad (norm test)"),
    "adagradnorm_adaptive": ("adagradnorm", "AdAdaGrad-Norm (norm test)"),
    "adagrad_coordwise": ("adagrad", "AdAdaGrad (coordinate-wise norm test)"),
}


def _teacher_data(n: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs, labels sampled from a random softmax teacher (noisy labels, Bayes loss > 0)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    teacher = torch.randn(d, k, generator=gen) * (4.0 / math.sqrt(d))
    probs = torch.softmax(x @ teacher, dim=1)
    y = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    return x, y


def _full_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def _optimum(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """Full-batch minimum of the training loss (L-BFGS, strong-Wolfe line search)."""
    model = torch.nn.Linear(x.shape[1], k)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return _full_loss(model, x, y)


def _train(x: torch.Tensor, y: torch.Tensor, k: int, make_opt, policy: AdaptiveBatchSize | None, batch: int,
           target: float, max_samples: int, seed: int) -> dict:
    """Train until the full training loss is <= target or the sample budget is spent."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], k)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    opt = make_opt(model.parameters())
    gen = torch.Generator().manual_seed(seed + 1)
    n = x.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    steps = samples = 0
    curve = [(0, 0, _full_loss(model, x, y), batch)]
    reached = None
    since_eval = 0
    while samples < max_samples:
        b = policy.batch_size if policy is not None else batch
        if pos + b > n:
            perm, pos = torch.cat([perm[pos:], torch.randperm(n, generator=gen)]), 0
        idx = perm[pos:pos + b]
        pos += b
        xb, yb = x[idx], y[idx]
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        steps += 1
        samples += b
        since_eval += b
        if policy is not None and policy.batch_size < policy.max_batch_size:
            policy.update(per_sample_grads(model, F.cross_entropy, xb[:512], yb[:512]))
        if since_eval >= 64 or samples >= max_samples:
            since_eval = 0
            loss = _full_loss(model, x, y)
            curve.append((steps, samples, loss, b))
            if loss <= target:
                reached = (steps, samples)
                break
    return {"steps": reached[0] if reached else math.inf, "samples": reached[1] if reached else math.inf,
            "steps_spent": steps, "samples_spent": samples, "reached": reached is not None,
            "curve": curve, "final_batch": policy.batch_size if policy is not None else batch,
            "steps_to_cap": (policy.history.index(policy.max_batch_size)
                             if policy is not None and policy.max_batch_size in policy.history else None)}


@claim(paper="adadagrad", title="Adaptive batches: fewer steps than a small batch, fewer samples than a large one",
       timeouts={"quick": 900})
def adaptive_batch_efficiency(run: ClaimRun) -> Evidence:
    n, d, k = run.pick(smoke=2000, quick=20000), run.pick(smoke=10, quick=50), 10
    budget = run.pick(smoke=8_000, quick=600_000)
    seeds = run.seeds(run.pick(smoke=2, quick=3))
    t0 = time.perf_counter()

    def adagrad(ps):
        return torch.optim.Adagrad(ps, lr=ADAGRAD_LR)

    def adagradnorm(ps):
        return AdaGradNorm(ps, lr=ADAGRADNORM_LR)

    plan = [
        ("adagrad_small", adagrad, None, SMALL_BATCH),
        ("adagrad_large", adagrad, None, LARGE_BATCH),
        ("adagrad_adaptive", adagrad, "norm", SMALL_BATCH),
        ("adagrad_coordwise", adagrad, "coordinatewise", SMALL_BATCH),
        ("adagradnorm_small", adagradnorm, None, SMALL_BATCH),
        ("adagradnorm_large", adagradnorm, None, LARGE_BATCH),
        ("adagradnorm_adaptive", adagradnorm, "norm", SMALL_BATCH),
    ]
    per_seed: list[dict[str, dict]] = []
    targets, optima = [], []
    for si, seed in enumerate(seeds):
        x, y = _teacher_data(n, d, k, seed=1000 + seed)
        run.progress(si / len(seeds), f"seed {si + 1}/{len(seeds)}: full-batch optimum (L-BFGS)")
        l_star = _optimum(x, y, k)
        target = l_star + TARGET_FRACTION * (math.log(k) - l_star)
        targets.append(target)
        optima.append(l_star)
        runs: dict[str, dict] = {}
        for i, (name, make_opt, kind, b) in enumerate(plan):
            run.progress((si + (i + 1) / (len(plan) + 1)) / len(seeds), f"seed {si + 1}: training {name}")
            policy = None
            if kind is not None:
                policy = AdaptiveBatchSize(b, MAX_BATCH, "norm", eta=ETA, coordinatewise=kind == "coordinatewise",
                                           coordinate_quantile=COORD_QUANTILE)
            runs[name] = _train(x, y, k, make_opt, policy, b, target, budget, seed=seed)
        per_seed.append(runs)

    def cost(r: dict, key: str) -> float:
        """Steps/samples to the target; a run that never reached it is charged what it spent (a lower bound)."""
        return float(r[key]) if r["reached"] else float(r[f"{key}_spent"])

    metrics: dict = {"seeds": len(seeds), "eta": ETA, "target_loss": targets, "optimum_loss": optima}
    headline, checks = [], []
    for name, (base, label) in ADAPTIVE.items():
        steps_a = [cost(r[name], "steps") for r in per_seed]
        steps_s = [cost(r[f"{base}_small"], "steps") for r in per_seed]
        samp_a = [cost(r[name], "samples") for r in per_seed]
        samp_l = [cost(r[f"{base}_large"], "samples") for r in per_seed]
        ci_steps = paired_bootstrap_ci(np.log(steps_s), np.log(steps_a))
        ci_samples = paired_bootstrap_ci(np.log(samp_l), np.log(samp_a))
        reached = all(r[name]["reached"] for r in per_seed)
        ok = bool(reached and ci_steps.above(0.0) and ci_samples.above(0.0))
        checks.append(ok)
        metrics[f"{name}_steps"] = steps_a
        metrics[f"{name}_samples"] = samp_a
        metrics[f"{name}_reached_all_seeds"] = reached
        metrics[f"{name}_log_step_ratio_vs_small_ci"] = ci_steps.to_json()
        metrics[f"{name}_log_sample_ratio_vs_large_ci"] = ci_samples.to_json()
        metrics[f"{name}_final_batch"] = [r[name]["final_batch"] for r in per_seed]
        metrics[f"{name}_steps_to_cap"] = [r[name]["steps_to_cap"] for r in per_seed]
        metrics[f"{name}_passes"] = ok
        headline.append(Check(f"{label}: lower CI bound of log(samples_large / samples_adaptive)", ci_samples.low,
                              ">", 0.0))
    for base in ("adagrad", "adagradnorm"):
        for kind in ("small", "large"):
            name = f"{base}_{kind}"
            metrics[f"{name}_steps"] = [cost(r[name], "steps") for r in per_seed]
            metrics[f"{name}_samples"] = [cost(r[name], "samples") for r in per_seed]
            metrics[f"{name}_reached_all_seeds"] = all(r[name]["reached"] for r in per_seed)
    metrics["seconds"] = time.perf_counter() - t0
    passed = bool(all(checks))

    runs, l_star, target = per_seed[0], optima[0], targets[0]
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    colors = {"small": "tab:blue", "large": "tab:orange", "adaptive": "tab:green", "coordwise": "tab:purple"}
    for name, r in runs.items():
        opt_name, kind = name.split("_")
        style = "-" if opt_name == "adagrad" else ":"
        st, sm, ls, bs = zip(*r["curve"])
        label = f"{'AdaGrad' if opt_name == 'adagrad' else 'AdaGrad-Norm'} {kind}"
        axes[0].plot([max(v, 1) for v in st], [v - l_star for v in ls], style, color=colors[kind], label=label)
        axes[1].plot([max(v, 1) for v in sm], [v - l_star for v in ls], style, color=colors[kind], label=label)
        if kind in ("adaptive", "coordwise"):
            axes[2].plot([max(v, 1) for v in st], bs, style, color=colors[kind], label=label)
    for ax, xl in zip(axes[:2], ("optimizer steps", "samples")):
        ax.axhline(target - l_star, color="k", lw=0.8, ls="--", label="target")
        ax.set(xscale="log", yscale="log", xlabel=xl, ylabel="training loss - L*")
    axes[0].set_title("loss vs steps (first seed)")
    axes[1].set_title("loss vs samples (first seed)")
    axes[2].set(xscale="log", yscale="log", xlabel="optimizer steps", ylabel="batch size",
                title=f"adaptive batch (eta={ETA}, cap {MAX_BATCH})")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return Evidence(
        metrics=metrics,
        criterion=("for each of AdAdaGrad (norm test), AdAdaGrad-Norm (norm test) and AdAdaGrad (coordinate-wise norm "
                   f"test), over {len(seeds)} seeds: it reaches the target on every seed, and the lower 95% paired "
                   "bootstrap CI bounds of mean log(steps_small / steps_adaptive) and of mean log(samples_large / "
                   "samples_adaptive) are > 0 (baselines: constant batches 8 and 512 with the same inner optimizer and "
                   "lr)"),
        passed=passed,
        headline=tuple(headline),
        figures={"adaptive_batch": fig},
        notes=(f"Softmax regression (n={n}, d={d}, K={k}) on labels sampled from a random softmax teacher (a new "
               f"teacher per seed); target = L* + {TARGET_FRACTION} (log K - L*), L* from full-batch L-BFGS; training "
               f"loss checked every >=64 samples. Inner optimizers: coordinate-wise AdaGrad (torch.optim.Adagrad, "
               f"lr={ADAGRAD_LR}) and scalar AdaGrad-Norm (gradlab AdaGradNorm, lr={ADAGRADNORM_LR}), each with "
               f"constant batches {SMALL_BATCH} and {LARGE_BATCH} and the same lr for every schedule (the lr is not "
               f"rescaled with the batch). Adaptive: b0={SMALL_BATCH}, b_max={MAX_BATCH}, test every step on <=512 "
               f"per-sample gradients from vmap(grad); norm test eta={ETA} fixed a priori (the paper's value for its "
               f"logistic-regression experiment, the official code's default); coordinate-wise norm test: every "
               f"coordinate j must satisfy Var_j / b <= eta^2 g_j^2 (quantile {COORD_QUANTILE}). Runs stop at the "
               f"target or after {budget} samples; a run that never reached the target is charged the steps/samples "
               "it spent (a lower bound on its cost), and an adaptive run that never reached it fails. steps_to_cap "
               "= optimizer steps until the batch reached the cap (None: never)."),
    )
