"""Do Input Gradients Highlight Discriminative Features? (arXiv 2102.12781).

Shah, Jain & Netrapalli test assumption (A): the magnitude of the input gradient highlights the
discriminative features. On BlockMNIST (a digit block and a label-independent null block, stacked at random
positions) standard models' gradients leak onto the null block, while adversarially trained (robust)
models' gradients concentrate on the digit; DiffROAR with retraining shows the same split.

Claims checked here, on two-block images built from scikit-learn's bundled 8x8 digits (0 vs 1):

1. ``robust_gradients_highlight_signal`` (the paper's second finding): the L2-PGD-trained model's gradients put
   clearly more |gradient| mass on the signal block than the standard model's, and DiffROAR at small unmasked
   fractions separates the two.
2. ``standard_gradients_near_random`` (the paper's first finding): a standard model's small-k DiffROAR is about that
   of a random attribution, i.e. not credibly above it by the margin that claim 1 calls a separation; decided on
   the 95% bootstrap CI over seeds of the paired difference (same data, same retraining seeds).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, bootstrap_ci, claim
from gradlab.explain.data import make_block_digits
from gradlab.explain.evaluation import attribution_mass_in_mask, diffroar, evaluate_accuracy, pixel_auroc
from gradlab.explain.robust import PGD, train_classifier

PAPER = Paper(
    key="input-gradients",
    title="Do Input Gradients Highlight Discriminative Features?",
    short_title="Input gradients & discriminative features",
    cluster="explain",
    arxiv="2102.12781",
    components=(
        "gradlab.explain.data",
        "gradlab.explain.evaluation.diffroar",
        "gradlab.explain.evaluation.localization",
        "gradlab.explain.robust",
        "gradlab.explain.gradients",
    ),
    statement=("Input gradients of standard models (trained on original data) may grossly violate assumption (A) - "
               "that their magnitude highlights discriminative, task-relevant features - whereas input gradients of "
               "adversarially robust models satisfy (A)."),
    revisions=(
        Revision(
            claim="standard_gradients_near_random",
            date="2026-12-01",
            old="(not tested: the paper's first finding was missing from the verdict)",
            new=("upper 95% CI bound over seeds of mean_{k in (0.05, 0.1)} [DiffROAR_standard(k) - "
                 "DiffROAR_random(k)] < 0.05; preconditions: standard model's clean accuracy >= 0.9 and the oracle "
                 "(signal-block) attribution's small-k DiffROAR exceeds the random one's by >= 0.1 on every seed"),
            reason=("Match the paper's statement (issue 9, 2.9): its first finding, that standard models' input "
                    "gradients are about as good as random ones under DiffROAR, was not tested; a failure makes the "
                    "paper partial."),
            old_result=("not tested; the issue's diagnosis on the claim's data measured small-k DiffROAR 0.21 for "
                        "the standard model vs 0.04 for random"),
        ),
        Revision(
            claim="robust_gradients_highlight_signal",
            date="2026-12-01",
            old=("robust_mass_on_signal - standard_mass_on_signal >= 0.1 and mean over k in (0.05, 0.1) of "
                 "(DiffROAR_robust(k) - DiffROAR_standard(k)) >= 0.05"),
            new="the same pass rule, plus the precondition that both models' clean test accuracy is >= 0.9",
            reason=("Issue 9, 1: a model that did not learn makes the comparison inconclusive, not failed; the pass "
                    "rule itself is unchanged."),
            old_result="passed: robust_mass_on_signal 0.7392, standard_mass_on_signal 0.5465",
        ),
    ),
)

FRACTIONS = (0.05, 0.1, 0.2, 0.4)
SMALL = (0.05, 0.1)
MASS_GAP = 0.10
DIFFROAR_GAP = 0.05
EPS_L2 = 1.0
ACC_MIN = 0.9
ORACLE_GAP_MIN = 0.10


def _mlp(d: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))


def _saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from gradlab.explain import Saliency

    return Saliency(model).attribute(x, target=y, abs=True, chunk_size=1024)


@claim(paper=PAPER.key, title="Robust models' input gradients highlight the signal block; DiffROAR separates "
       "robust from standard", timeouts={"quick": 900})
def robust_gradients_highlight_signal(run: ClaimRun) -> Evidence:
    n_train = run.pick(smoke=200, quick=2000, full=6000)
    n_test = run.pick(smoke=100, quick=600, full=2000)
    epochs = run.pick(smoke=2, quick=10, full=20)
    retrain_epochs = run.pick(smoke=1, quick=5, full=10)
    n_runs = run.pick(smoke=1, quick=2, full=5)
    data = make_block_digits(run.seed, classes=(0, 1), n_train=n_train, n_test=n_test, noise=0.05)
    d = data.x_train[0].numel()

    run.progress(0.0, "training the standard model")
    torch.manual_seed(run.seed)
    standard = train_classifier(_mlp(d), data.x_train, data.y_train, epochs=epochs, seed=run.seed)
    run.progress(0.05, "PGD adversarial training (L2)")
    torch.manual_seed(run.seed)
    robust_model = _mlp(d)
    robust = train_classifier(robust_model, data.x_train, data.y_train, epochs=epochs, seed=run.seed,
                              attack=PGD(robust_model, eps=EPS_L2, norm="l2", steps=7, seed=run.seed))
    models = {"standard": standard, "robust": robust}
    metrics: dict[str, float] = {}
    attrs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, model in models.items():
        metrics[f"{name}_clean_acc"] = evaluate_accuracy(model, data.x_test, data.y_test)
        adv = PGD(model, eps=EPS_L2, norm="l2", steps=20, seed=run.seed + 1)(data.x_test, data.y_test)
        metrics[f"{name}_pgd_acc"] = evaluate_accuracy(model, adv, data.y_test)
        a_tr = _saliency(model, data.x_train, data.y_train)
        a_te = _saliency(model, data.x_test, data.y_test)
        attrs[name] = (a_tr, a_te)
        metrics[f"{name}_mass_on_signal"] = float(attribution_mass_in_mask(a_te, data.mask_test).mean())
        metrics[f"{name}_pixel_auroc"] = float(pixel_auroc(a_te, data.mask_test).mean())
    gen = torch.Generator().manual_seed(run.seed)
    attrs["random"] = (torch.rand(data.x_train.shape, generator=gen), torch.rand(data.x_test.shape, generator=gen))
    attrs["oracle"] = (data.mask_train.float(), data.mask_test.float())

    def train_fn(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return train_classifier(_mlp(d), x, y, epochs=retrain_epochs, seed=seed)

    curves = {}
    names = list(attrs)
    for i, name in enumerate(names):
        a_tr, a_te = attrs[name]
        res = diffroar(train_fn, data.x_train, data.y_train, a_tr, data.x_test, data.y_test, a_te,
                       fractions=FRACTIONS, n_runs=n_runs, fill="mean", seed=run.seed,
                       progress=lambda f, i=i: run.progress(0.15 + 0.85 * (i + f) / len(names), "DiffROAR retraining"))
        curves[name] = res
        for k, v, s in zip(FRACTIONS, res.curve, res.std):
            metrics[f"diffroar_{name}_k{k:g}"] = float(v)
            metrics[f"diffroar_{name}_k{k:g}_sd"] = float(s)
        metrics[f"diffroar_{name}_area"] = res.area
    small = [FRACTIONS.index(k) for k in SMALL]
    mass_gap = metrics["robust_mass_on_signal"] - metrics["standard_mass_on_signal"]
    droar_gap = float(np.mean(curves["robust"].curve[small] - curves["standard"].curve[small]))
    metrics["mass_gap"] = mass_gap
    metrics["diffroar_small_k_gap"] = droar_gap
    metrics["chance_mass"] = 0.5
    headline = (Check("|grad| mass on signal, robust - standard", mass_gap, ">=", MASS_GAP),
                Check("small-k DiffROAR, robust - standard", droar_gap, ">=", DIFFROAR_GAP))
    passed = bool(all(h.ok for h in headline))
    preconditions = {"both models learned": Check("lower clean test accuracy", min(
        metrics["standard_clean_acc"], metrics["robust_clean_acc"]), ">=", ACC_MIN)}

    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 1, 1]})
    for name, res in curves.items():
        axes[0].errorbar(res.fractions, res.curve, yerr=res.std, marker="o", capsize=3, label=name)
    axes[0].axhline(0, color="grey", lw=0.8)
    axes[0].set_xlabel("fraction of pixels left unmasked (k)")
    axes[0].set_ylabel("DiffROAR(k) = acc(top-k) - acc(bottom-k)")
    axes[0].set_title("DiffROAR with retraining")
    axes[0].legend(fontsize=8)
    for ax, name in zip(axes[1:], ("standard", "robust")):
        a = attrs[name][1][:4, 0]
        a = a / a.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        images = torch.cat(list(data.x_test[:4, 0]), dim=1)
        grads = torch.cat(list(a), dim=1)
        ax.imshow(torch.cat([images, grads], dim=0).numpy(), cmap="magma")
        ax.set_title(f"{name}: images (top), |grad| (bottom)\nmass on signal block "
                     f"{metrics[f'{name}_mass_on_signal']:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Two-block digits (0 vs 1): does |input gradient| pick the signal block?")
    return Evidence(
        metrics=metrics,
        criterion=(f"robust_mass_on_signal - standard_mass_on_signal >= {MASS_GAP} and mean over k in {SMALL} of "
                   f"(DiffROAR_robust(k) - DiffROAR_standard(k)) >= {DIFFROAR_GAP}"),
        passed=passed,
        preconditions=preconditions,
        headline=headline,
        figures={"diffroar_and_gradients": fig},
        notes=(f"Two-block images (16x8) from sklearn digits 0/1 with a fixed hollow-square null block, noise 0.05; "
               f"MLP 128-256-256-2, Adam, {epochs} epochs; robust = L2 PGD adversarial training eps={EPS_L2}, 7 steps. "
               f"Attributions: |d logit_y / dx| (Saliency). DiffROAR: fill = training mean, fractions {FRACTIONS}, "
               f"{n_runs} retraining runs of {retrain_epochs} epochs; random and oracle (signal-block mask) "
               "attributions as references. Paper: MNIST digits 28x28 and larger models; here 8x8 digits."),
    )


@claim(paper=PAPER.key, title="A standard model's input gradients are no better than a random attribution under "
       "DiffROAR at small k", timeouts={"quick": 900})
def standard_gradients_near_random(run: ClaimRun) -> Evidence:
    n_train = run.pick(smoke=200, quick=2000, full=6000)
    n_test = run.pick(smoke=100, quick=600, full=2000)
    epochs = run.pick(smoke=2, quick=10, full=20)
    retrain_epochs = run.pick(smoke=1, quick=5, full=10)
    n_runs = run.pick(smoke=1, quick=2, full=5)
    seeds = run.seeds(run.pick(smoke=2, quick=5, full=8))
    per_seed: list[dict[str, float]] = []
    curves_first: dict = {}
    for i, seed in enumerate(seeds):
        data = make_block_digits(seed, classes=(0, 1), n_train=n_train, n_test=n_test, noise=0.05)
        d = data.x_train[0].numel()
        run.progress(i / len(seeds), f"seed {seed}: training the standard model")
        torch.manual_seed(seed)
        standard = train_classifier(_mlp(d), data.x_train, data.y_train, epochs=epochs, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        attrs = {
            "standard": (_saliency(standard, data.x_train, data.y_train), _saliency(standard, data.x_test, data.y_test)),
            "random": (torch.rand(data.x_train.shape, generator=gen), torch.rand(data.x_test.shape, generator=gen)),
            "oracle": (data.mask_train.float(), data.mask_test.float()),
        }

        def train_fn(x: torch.Tensor, y: torch.Tensor, s: int) -> nn.Module:
            torch.manual_seed(s)
            return train_classifier(_mlp(d), x, y, epochs=retrain_epochs, seed=s)

        r: dict[str, float] = {"standard_clean_acc": evaluate_accuracy(standard, data.x_test, data.y_test),
                               "standard_mass_on_signal": float(attribution_mass_in_mask(attrs["standard"][1],
                                                                                         data.mask_test).mean())}
        for j, (name, (a_tr, a_te)) in enumerate(attrs.items()):
            res = diffroar(train_fn, data.x_train, data.y_train, a_tr, data.x_test, data.y_test, a_te,
                           fractions=SMALL, n_runs=n_runs, fill="mean", seed=seed,
                           progress=lambda f, i=i, j=j: run.progress((i + (j + f) / 3) / len(seeds), "DiffROAR"))
            for k, v in zip(SMALL, res.curve):
                r[f"diffroar_{name}_k{k:g}"] = float(v)
            r[f"diffroar_{name}_small_k"] = float(np.mean(res.curve))
            if i == 0:
                curves_first[name] = res
        r["standard_minus_random"] = r["diffroar_standard_small_k"] - r["diffroar_random_small_k"]
        r["oracle_minus_random"] = r["diffroar_oracle_small_k"] - r["diffroar_random_small_k"]
        per_seed.append(r)

    metrics: dict[str, object] = {"seeds": list(seeds)}
    for k in per_seed[0]:
        metrics[k] = float(np.mean([r[k] for r in per_seed]))
    ci = bootstrap_ci([r["standard_minus_random"] for r in per_seed], seed=run.seed)
    metrics["standard_minus_random_ci"] = ci.to_json()
    for k in ("standard_minus_random", "oracle_minus_random", "diffroar_standard_small_k", "diffroar_random_small_k"):
        metrics[f"{k}_per_seed"] = [r[k] for r in per_seed]
    headline = (Check("small-k DiffROAR, standard - random (CI upper)", ci.high, "<", DIFFROAR_GAP),)
    passed = bool(headline[0].ok)
    preconditions = {
        "standard model learned": Check("lowest clean test accuracy over seeds",
                                        min(r["standard_clean_acc"] for r in per_seed), ">=", ACC_MIN),
        "DiffROAR can tell informative from random masks": Check(
            "oracle - random small-k DiffROAR (min over seeds)", min(r["oracle_minus_random"] for r in per_seed),
            ">=", ORACLE_GAP_MIN),
    }

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    for name, res in curves_first.items():
        ax1.errorbar(res.fractions, res.curve, yerr=res.std, marker="o", capsize=3, label=name)
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set_xlabel("fraction of pixels left unmasked (k)")
    ax1.set_ylabel("DiffROAR(k)")
    ax1.set_title("first seed: DiffROAR with retraining", fontsize=9)
    ax1.legend(fontsize=8)
    names = ("standard", "random", "oracle")
    for j, name in enumerate(names):
        ys = [r[f"diffroar_{name}_small_k"] for r in per_seed]
        ax2.scatter(np.full(len(ys), j), ys, s=16)
    ax2.set_xticks(range(3), names)
    ax2.set_ylabel(f"mean DiffROAR over k in {SMALL} (one dot per seed)")
    ax2.set_title(f"standard - random: {ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}] (threshold < {DIFFROAR_GAP})",
                  fontsize=9)
    fig.suptitle("Two-block digits (0 vs 1): is a standard model's |input gradient| better than random?")
    return Evidence(
        metrics=metrics,
        criterion=(f"upper 95% bootstrap CI bound over {len(seeds)} seeds of mean over k in {SMALL} of "
                   f"(DiffROAR_standard(k) - DiffROAR_random(k)) < {DIFFROAR_GAP}"),
        passed=passed,
        preconditions=preconditions,
        headline=headline,
        figures={"standard_vs_random": fig},
        notes=(f"Same data, model and DiffROAR recipe as robust_gradients_highlight_signal (noise 0.05, MLP "
               f"128-256-256-2, {epochs} epochs; fill = training mean; {n_runs} retraining runs of {retrain_epochs} "
               f"epochs per k and direction), one standard model per seed, k in {SMALL} only. Random = i.i.d. "
               "uniform attribution, oracle = the signal-block mask. The threshold is the margin the robust claim "
               "uses to call two DiffROAR curves separated; the paper reports standard models at or below random "
               "(DiffROAR <= 0 at small k) on its four benchmarks. Unsuffixed numbers are means over seeds."),
    )
