"""Toward Understanding Why Adam Converges Faster Than SGD for Transformers (arXiv 2306.00204).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.

Claim ``sharpness_and_clipping``: on a small causal transformer language model trained on tokens with
Zipf-distributed frequencies, (1) SGD's update direction (the gradient) is at least 3x sharper
(:math:`u^\\top H u` for unit :math:`u`) than Adam's, (2) clipping the top 10% of SGD's coordinates cuts that
sharpness at least 2x and raises the optimal one-step loss reduction, and (3) SGD with coordinate clipping
reaches a lower held-out loss than SGD at the same step budget, both tuned over the same learning-rate grid.
Every part is repeated over seeds; (3) is decided on the paired bootstrap CI of the loss difference.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, claim, paired_bootstrap_ci
from gradlab.curvature.sharpness import directional_sharpness
from gradlab.optim.clipping import clip_coordinates, coordinate_clip

PAPER = Paper(
    key="adam-vs-sgd",
    title="Toward Understanding Why Adam Converges Faster Than SGD for Transformers",
    short_title="Why Adam beats SGD on transformers",
    cluster="optim",
    arxiv="2306.00204",
    components=("gradlab.optim.clipping", "gradlab.curvature.sharpness", "gradlab.curvature.hvp"),
    statement=("Adam converges faster than SGD on transformers because its update direction has a much smaller "
               "directional sharpness than SGD's; clipping the largest coordinates of SGD's update reduces its "
               "sharpness, raises the one-step loss reduction and speeds up SGD's convergence."),
    revisions=(
        Revision(
            claim="sharpness_and_clipping",
            date="2026-12-01",
            old=("(one seed) at every checkpoint: S(SGD)/S(Adam) >= 3, S(SGD)/S(SGD+clip10%) >= 2 and "
                 "reduction(SGD+clip10%) > reduction(SGD); and tuned SGD+clip10% held-out loss < tuned SGD's"),
            new=("over run.seeds (quick: 3): the sharpness conditions at every checkpoint of every seed; and the "
                 "lower 95% paired bootstrap CI bound of mean (tuned SGD loss - tuned SGD+clip10% loss) > 0"),
            reason=("'Trains faster' rested on one draw and a margin of 0.0097 nats; a margin must be decided on a CI "
                    "over seeds (issue 9, 1)."),
            old_result=("passed (one seed): sgd_best_excess_loss 0.08505, SGD+clip lower by 0.0097 nats; sharpness "
                        "ratios >= 3 and >= 2 at steps 30 and 300"),
        ),
    ),
)

VOCAB, CONTEXT, WIDTH, HEADS = 64, 12, 32, 2
CLIP_FRACTION = 0.1
ZIPF_EXPONENT, TRANSITION_NOISE = 1.1, 1.5


class ZipfMarkovTokens:
    """A Markov chain over ``VOCAB`` tokens whose next-token distributions follow a Zipf law with noise.

    ``P[i, j] ∝ (j+1)^(-s) · exp(σ z_ij)`` with Gaussian ``z``: frequent tokens dominate every row (heavy-tailed
    token frequencies, as in natural language), while the perturbation gives each context its own structure.
    """

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        zipf = (torch.arange(VOCAB, dtype=torch.float64) + 1) ** (-ZIPF_EXPONENT)
        logits = zipf.log() + TRANSITION_NOISE * torch.randn(VOCAB, VOCAB, generator=g, dtype=torch.float64)
        self.transition = torch.softmax(logits, dim=1).float()
        self.initial = (zipf / zipf.sum()).float()

    def bayes_loss(self) -> float:
        """Expected cross-entropy of the true next-token distributions over the ``CONTEXT`` target positions."""
        row_entropy = -(self.transition * self.transition.clamp_min(1e-30).log()).sum(1).double()
        marginal, total = self.initial.double(), 0.0
        for _ in range(CONTEXT):
            total += float(marginal @ row_entropy)
            marginal = marginal @ self.transition.double()
        return total / CONTEXT

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` sequences: inputs ``(n, CONTEXT)`` and next-token targets ``(n, CONTEXT)``."""
        tokens = torch.empty(n, CONTEXT + 1, dtype=torch.long)
        tokens[:, 0] = torch.multinomial(self.initial, n, replacement=True, generator=generator)
        for t in range(CONTEXT):
            tokens[:, t + 1] = torch.multinomial(self.transition[tokens[:, t]], 1, generator=generator).squeeze(1)
        return tokens[:, :-1], tokens[:, 1:]


class TinyCausalLM(nn.Module):
    """One pre-LayerNorm transformer block with explicit (math) causal attention, so double backward works."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Parameter(0.02 * torch.randn(CONTEXT, WIDTH))
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))
        self.head = nn.Linear(WIDTH, VOCAB)
        self.register_buffer("causal", torch.tril(torch.ones(CONTEXT, CONTEXT, dtype=torch.bool)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        x = self.embed(tokens) + self.pos[:t]
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(WIDTH // HEADS)
        scores = scores.masked_fill(~self.causal[:t, :t], -1e9)
        att = torch.softmax(scores, dim=-1) @ v
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, WIDTH))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def update_directions(model: nn.Module, adam: torch.optim.Optimizer, batch) -> dict[str, torch.Tensor]:
    """Flat unit-free directions ``d`` (step ``theta - lr d``) at the current point, for the evaluation batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    lm_loss(model(batch[0]), batch[1]).backward()
    grads = [p.grad.detach().clone() for p in params]
    model.zero_grad(set_to_none=True)
    # Adam's next step from its current state, taken on a copy
    shadow = copy.deepcopy(model)
    shadow_params = [p for p in shadow.parameters() if p.requires_grad]
    shadow_adam = type(adam)(shadow_params, **adam.defaults)
    shadow_adam.load_state_dict(copy.deepcopy(adam.state_dict()))
    for p, g in zip(shadow_params, grads):
        p.grad = g.clone()
    lr = shadow_adam.param_groups[0]["lr"]
    before = [p.detach().clone() for p in shadow_params]
    shadow_adam.step()
    adam_dir = [(b - p.detach()) / lr for b, p in zip(before, shadow_params)]
    return {
        "SGD": _flat(grads),
        f"SGD + clip top {int(100 * CLIP_FRACTION)}%": _flat(clip_coordinates(grads, CLIP_FRACTION, "global")),
        "sign(g)": _flat([g.sign() for g in grads]),
        "Adam": _flat(adam_dir),
        f"Adam + clip top {int(100 * CLIP_FRACTION)}%": _flat(clip_coordinates(adam_dir, CLIP_FRACTION, "global")),
    }


def train_sgd(lr: float, clip: bool, steps: int, batch: int, seed: int, data: ZipfMarkovTokens, eval_batch,
              eval_every: int) -> list[float]:
    """SGD with momentum 0.9 (optionally wrapped by global coordinate clipping); held-out loss curve."""
    torch.manual_seed(seed)
    model = TinyCausalLM()
    base = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, foreach=True)
    opt = coordinate_clip(base, CLIP_FRACTION, scope="global") if clip else base
    g = torch.Generator().manual_seed(seed + 1)
    curve = []
    for i in range(steps + 1):
        if i % eval_every == 0 or i == steps:
            with torch.no_grad():
                loss = float(lm_loss(model(eval_batch[0]), eval_batch[1]))
            curve.append(loss if math.isfinite(loss) else float("inf"))
        if i == steps:
            break
        x, y = data.sample(batch, g)
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model(x), y)
        if not torch.isfinite(loss):
            # diverged: the step would make the parameters non-finite, so every later evaluation is inf;
            # record them without computing them (saves time, changes no number)
            curve.extend(float("inf") for j in range(i + 1, steps + 1) if j % eval_every == 0 or j == steps)
            break
        loss.backward()
        opt.step()
    return curve


def _one_seed(seed: int, adam_steps: int, checkpoints, n_eval: int, n_heldout: int, sgd_steps: int, lr_grid,
              batch: int, progress) -> dict[str, object]:
    """Sharpness at the checkpoints of an Adam run, and tuned SGD vs tuned SGD + clipping, for one seed."""
    data = ZipfMarkovTokens(seed)
    eval_batch = data.sample(n_eval, torch.Generator().manual_seed(seed + 100))
    heldout = data.sample(n_heldout, torch.Generator().manual_seed(seed + 200))
    torch.manual_seed(seed)
    model = TinyCausalLM()
    adam = torch.optim.Adam(model.parameters(), lr=3e-3, foreach=True)
    g = torch.Generator().manual_seed(seed + 1)
    results: dict[int, dict[str, object]] = {}
    work = len(checkpoints) + 2 * len(lr_grid)
    for step in range(1, adam_steps + 1):
        x, y = data.sample(batch, g)
        adam.zero_grad(set_to_none=True)
        lm_loss(model(x), y).backward()
        adam.step()
        if step in checkpoints:
            dirs = update_directions(model, adam, eval_batch)
            stats = directional_sharpness(model, lm_loss, eval_batch, torch.stack(list(dirs.values()), dim=1),
                                          dtype=torch.float64)
            results[step] = dict(zip(dirs, stats))
            progress(len(results) / work, f"sharpness at Adam step {step}")
    eval_every = max(1, sgd_steps // 30)
    curves: dict[tuple[bool, float], list[float]] = {}
    for clip in (False, True):
        for lr in lr_grid:
            curves[(clip, lr)] = train_sgd(lr, clip, sgd_steps, batch, seed, data, heldout, eval_every)
            progress((len(results) + len(curves)) / work, f"{'SGD+clip' if clip else 'SGD'} lr {lr}")
    best = {clip: min(lr_grid, key=lambda lr: curves[(clip, lr)][-1]) for clip in (False, True)}
    with torch.no_grad():
        loss_adam = float(lm_loss(model(heldout[0]), heldout[1]))
    return {"sharpness": results, "curves": curves, "best": best, "eval_every": eval_every,
            "loss_sgd": curves[(False, best[False])][-1], "loss_clip": curves[(True, best[True])][-1],
            "loss_adam": loss_adam, "bayes": data.bayes_loss()}


@claim(paper=PAPER.key,
       title="SGD directions >=3x sharper than Adam's; clipping cuts SGD sharpness >=2x, raises reduction, trains faster",
       timeouts={"smoke": 180, "quick": 900})
def sharpness_and_clipping(run: ClaimRun) -> Evidence:
    adam_steps = run.pick(smoke=6, quick=300, full=1000)
    checkpoints = run.pick(smoke=(3, 6), quick=(30, 300), full=(30, 300, 1000))
    n_eval = run.pick(smoke=16, quick=256, full=512)
    sgd_steps = run.pick(smoke=5, quick=300, full=1000)
    lr_grid = run.pick(smoke=(0.3, 1.0), quick=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0), full=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0))
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    batch = 64
    per_seed = []
    for i, seed in enumerate(seeds):
        per_seed.append(_one_seed(seed, adam_steps, checkpoints, n_eval, run.pick(smoke=64, quick=2048, full=4096),
                                  sgd_steps, lr_grid, batch,
                                  lambda f, m, i=i: run.progress((i + f) / len(seeds), f"seed {i + 1}/{len(seeds)}: {m}")))

    metrics: dict[str, object] = {"seeds": len(seeds)}
    sharp_ok, clip_ok, red_ok = True, True, True
    clip_name = f"SGD + clip top {int(100 * CLIP_FRACTION)}%"
    min_ratio_adam, min_ratio_clip = math.inf, math.inf
    for si, r in enumerate(per_seed):
        for step, res in r["sharpness"].items():
            if si == 0:
                for name, st in res.items():
                    key = name.replace(" + clip top ", "_clip").replace("%", "").replace("(", "_").replace(")", "")
                    metrics[f"step{step}_{key}_sharpness"] = st.sharpness
                    metrics[f"step{step}_{key}_reduction"] = st.optimal_reduction
                    metrics[f"step{step}_{key}_grad_corr"] = st.gradient_correlation
            s_sgd, s_adam, s_clip = res["SGD"].sharpness, res["Adam"].sharpness, res[clip_name].sharpness
            r_sgd, r_clip = res["SGD"].optimal_reduction, res[clip_name].optimal_reduction
            ratio_adam = s_sgd / s_adam if s_adam > 0 else math.inf
            ratio_clip = s_sgd / s_clip if s_clip > 0 else math.inf
            metrics.setdefault(f"step{step}_sgd_over_adam_sharpness", []).append(ratio_adam)
            metrics.setdefault(f"step{step}_clip_sharpness_cut", []).append(ratio_clip)
            metrics.setdefault(f"step{step}_clip_reduction_gain", []).append(r_clip / r_sgd if r_sgd > 0 else math.inf)
            sharp_ok = sharp_ok and s_adam > 0 and ratio_adam >= 3
            clip_ok = clip_ok and ratio_clip >= 2
            red_ok = red_ok and r_clip > r_sgd
            min_ratio_adam, min_ratio_clip = min(min_ratio_adam, ratio_adam), min(min_ratio_clip, ratio_clip)

    loss_sgd = [r["loss_sgd"] for r in per_seed]
    loss_clip = [r["loss_clip"] for r in per_seed]
    ci = paired_bootstrap_ci(loss_sgd, loss_clip)
    first = per_seed[0]
    curves, best, floor, eval_every = first["curves"], first["best"], first["bayes"], first["eval_every"]
    metrics.update({
        "bayes_loss": [r["bayes"] for r in per_seed],
        "sgd_best_loss": loss_sgd, "sgd_clip_best_loss": loss_clip,
        "sgd_best_excess_loss": [r["loss_sgd"] - r["bayes"] for r in per_seed],
        "sgd_clip_best_excess_loss": [r["loss_clip"] - r["bayes"] for r in per_seed],
        "sgd_minus_clip_loss_ci": ci.to_json(),
        "sgd_best_lr": [r["best"][False] for r in per_seed], "sgd_clip_best_lr": [r["best"][True] for r in per_seed],
        "adam_loss_same_steps": [r["loss_adam"] for r in per_seed] if adam_steps == sgd_steps else None,
        "sgd_losses_by_lr": [curves[(False, lr)][-1] for lr in lr_grid],
        "sgd_clip_losses_by_lr": [curves[(True, lr)][-1] for lr in lr_grid],
        "min_sgd_over_adam_sharpness": min_ratio_adam, "min_clip_sharpness_cut": min_ratio_clip,
    })
    train_ok = ci.above(0.0)
    passed = sharp_ok and clip_ok and red_ok and train_ok
    metrics.update({"sgd_3x_sharper_than_adam": sharp_ok, "clip_cuts_sharpness_2x": clip_ok,
                    "clip_raises_reduction": red_ok, "sgd_clip_trains_faster": train_ok})

    results = first["sharpness"]
    fig = Figure(figsize=(15, 4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    names = list(next(iter(results.values())))
    width = 0.8 / len(results)
    for j, (step, res) in enumerate(results.items()):
        xs = np.arange(len(names)) + j * width
        ax1.bar(xs, [max(res[n].sharpness, 1e-8) for n in names], width, label=f"Adam step {step}")
        ax2.bar(xs, [res[n].optimal_reduction for n in names], width, label=f"Adam step {step}")
    for ax, title, ylabel in ((ax1, "directional sharpness u^T H u (unit u), first seed", "sharpness (log)"),
                              (ax2, "optimal one-step loss reduction <g,u>^2 / (2 u^T H u)", "loss reduction")):
        ax.set_xticks(np.arange(len(names)) + width * (len(results) - 1) / 2)
        ax.set_xticklabels(names, rotation=20, fontsize=7)
        ax.set(title=title, ylabel=ylabel)
        ax.legend(fontsize=7)
    ax1.set_yscale("log")
    steps_axis = [min(i * eval_every, sgd_steps) for i in range(len(curves[(False, best[False])]))]
    for clip, color, label in ((False, "tab:blue", "SGD"), (True, "tab:red", "SGD + clip 10%")):
        excess = np.maximum(np.array(curves[(clip, best[clip])]) - floor, 1e-4)
        ax3.plot(steps_axis, excess, label=f"{label} (best lr {best[clip]})", color=color)
    ax3.set(xlabel="step", ylabel="held-out loss - Bayes floor (log)", yscale="log",
            title=f"first seed; SGD - clip over seeds: {ci}")
    ax3.title.set_fontsize(8)
    ax3.legend(fontsize=7)
    fig.tight_layout()

    return Evidence(
        metrics=metrics,
        criterion=(f"over {len(seeds)} seeds: at every checkpoint of every seed S(SGD)/S(Adam) >= 3, "
                   "S(SGD)/S(SGD+clip10%) >= 2 and reduction(SGD+clip10%) > reduction(SGD); and the lower 95% paired "
                   "bootstrap CI bound of mean (tuned SGD held-out loss - tuned SGD+clip10% held-out loss) > 0"),
        passed=bool(passed),
        headline=(Check("lower CI bound of (SGD - SGD+clip) tuned held-out loss (nats)", ci.low, ">", 0.0),
                  Check("min S(SGD)/S(Adam) over checkpoints and seeds", min_ratio_adam, ">=", 3.0),
                  Check("min S(SGD)/S(SGD+clip) over checkpoints and seeds", min_ratio_clip, ">=", 2.0)),
        figures={"sharpness_and_training": fig},
        notes=(
            f"1-block pre-LN causal transformer (V={VOCAB}, context {CONTEXT}, width {WIDTH}, {HEADS} heads, explicit "
            f"attention) on a Zipf(s={ZIPF_EXPONENT}) Markov chain with noisy transitions (a new chain per seed). "
            f"Directions at checkpoints {checkpoints} of an Adam run (lr 3e-3, batch {batch}) on a fixed batch of "
            f"{n_eval} sequences, unit norm, Hessian-vector products in float64 (gradlab.curvature."
            "directional_sharpness): SGD = gradient, Adam = its next step from its state, clipping = top 10% "
            "coordinates of the whole update (global scope; the paper's quantile scope is not verified). Training: "
            f"SGD momentum 0.9 with and without coordinate_clip(scope='global'), {sgd_steps} steps, batch {batch}, lr "
            f"grid {list(lr_grid)} for both (tuned per seed), held-out loss on fresh sequences. Per-step metrics are "
            "the first seed's; ratio lists run over seeds."
        ),
    )
