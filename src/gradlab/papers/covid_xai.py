"""Exploration of Interpretability Techniques for Deep COVID-19 Classification using Chest X-ray Images (arXiv 2006.02570).

Chatterjee et al. train several CNNs for multilabel chest X-ray classification (sigmoid outputs, micro-F1), combine
them by majority voting, and compare local attribution methods (occlusion, saliency, input x gradient, guided
backprop, integrated gradients, DeepLIFT) plus neuron activation profiles, qualitatively. Here the same pipeline
runs on synthetic chest-like images whose findings have known masks, so the comparison becomes quantitative.

The claim follows the paper's two statements: the majority-vote ensemble's micro-F1 is above that of its *best*
member (0.89 against 0.66-0.875 in the paper), and the residual network is the most interpretable model (the
paper: "the ResNets were the most interpretable models"), here measured as the attribution mass inside the
finding's mask relative to chance, averaged over the six local methods and the three findings. Both are paired
per seed (same data, same members) and decided on 95% bootstrap CIs over seeds.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, bootstrap_ci, claim
from gradlab.explain import (
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    MultilabelEnsemble,
    Occlusion,
    Saliency,
    micro_f1,
    neuron_activation_profiles,
)
from gradlab.explain.evaluation import attribution_mass_in_mask

PAPER = Paper(
    key="covid-xai",
    title="Exploration of Interpretability Techniques for Deep COVID-19 Classification using Chest X-ray Images",
    short_title="COVID-19 CXR interpretability",
    cluster="explain",
    arxiv="2006.02570",
    components=(
        "gradlab.explain.gradients",
        "gradlab.explain.perturbation",
        "gradlab.explain.ensembles",
        "gradlab.explain.activation_profiles",
        "gradlab.explain.evaluation.localization",
    ),
    statement=("The mean micro-F1 of the models for COVID-19 classification ranges from 0.66 to 0.875 and is 0.89 for "
               "the majority-voting ensemble of the networks, and the qualitative results showed that the ResNets "
               "were the most interpretable models."),
    revisions=(
        Revision(
            claim="ensemble_and_localisation",
            date="2026-12-01",
            old="majority_vote_micro_f1 > mean_member_micro_f1 and min_method_mass_over_chance > 1 (one seed)",
            new=("over seeds (95% bootstrap CI of the per-seed differences): majority-vote micro-F1 minus the best "
                 "member's micro-F1 has CI lower bound > 0, and the residual model's lesion mass over chance (mean "
                 "over the six methods and three findings) minus the best other model's has CI lower bound > 0; "
                 "precondition: every member's micro-F1 above that of predicting every finding present"),
            reason=("Match the paper's statement (issue 9, 2.8): its ensemble beats its best member (0.89 vs 0.875), "
                    "not the mean; 'min mass over chance > 1' could not fail (3.2x) and is replaced by the paper's "
                    "ranking statement (ResNets most interpretable). One draw replaced by a CI over seeds."),
            old_result=("passed: majority_vote_micro_f1 0.7875 > mean_member_micro_f1 0.7791 (best member about "
                        "0.81), min_method_mass_over_chance 3.226"),
        ),
    ),
)

RESNET = "ResCNN"

FINDINGS = ("consolidation", "nodules", "effusion")


def make_chest_images(n: int, seed: int, size: int = 32, p_finding: float = 0.35) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic chest-like images (n, 1, size, size), multilabel targets (n, 3) and finding masks (n, 3, size, size).

    A bright body ellipse holds two dark lung fields (jittered in position, size and contrast, with smooth texture
    and pixel noise). Each finding is present independently with probability ``p_finding``:
    0 consolidation -- a soft Gaussian opacity inside one lung; 1 nodules -- 2-4 small bright disks in the lungs;
    2 effusion -- a bright band filling the base of one lung. The mask marks where each finding was drawn.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    xs = np.zeros((n, 1, size, size), dtype=np.float32)
    ys = np.zeros((n, 3), dtype=np.float32)
    ms = np.zeros((n, 3, size, size), dtype=bool)
    px = 2.0 / (size - 1)
    for i in range(n):
        img = 0.6 * (((xx / 0.9) ** 2 + ((yy - 0.05) / 0.97) ** 2) <= 1.0)
        lungs = []
        for side in (-1, 1):
            cx = side * 0.42 + rng.uniform(-0.04, 0.04)
            cy = -0.05 + rng.uniform(-0.04, 0.04)
            rx, ry = 0.27 * rng.uniform(0.93, 1.07), 0.6 * rng.uniform(0.93, 1.07)
            lung = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
            img = np.where(lung, 0.18 * rng.uniform(0.85, 1.15), img)
            lungs.append((lung, cx, cy, rx, ry))
        tex = rng.standard_normal((size // 4, size // 4))
        tex = np.kron(tex, np.ones((4, 4)))[:size, :size]
        img = img + 0.03 * tex
        any_lung = lungs[0][0] | lungs[1][0]
        if rng.random() < p_finding:  # consolidation
            lung, cx, cy, rx, ry = lungs[rng.integers(2)]
            bx, by = cx + rng.uniform(-0.5, 0.5) * rx, cy + rng.uniform(-0.5, 0.5) * ry
            s = rng.uniform(0.1, 0.16)
            blob = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * s * s))
            img = img + 0.3 * blob * lung
            ms[i, 0] = (blob > np.exp(-2.0)) & lung
            ys[i, 0] = 1
        if rng.random() < p_finding:  # nodules
            for _ in range(int(rng.integers(2, 5))):
                lung, cx, cy, rx, ry = lungs[rng.integers(2)]
                ang, rad = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.6))
                bx, by = cx + rad * rx * np.cos(ang), cy + rad * ry * np.sin(ang)
                r = rng.uniform(1.0, 1.6) * px
                disk = ((xx - bx) ** 2 + (yy - by) ** 2) <= r * r
                img = np.where(disk, img + 0.4, img)
                ms[i, 1] |= ((xx - bx) ** 2 + (yy - by) ** 2) <= (r + px) ** 2
            ys[i, 1] = 1
        if rng.random() < p_finding:  # effusion
            lung, cx, cy, rx, ry = lungs[rng.integers(2)]
            band = lung & (yy > cy + ry * rng.uniform(0.45, 0.65))
            img = np.where(band, 0.5, img)
            ms[i, 2] = band
            ys[i, 2] = 1
        img = img * rng.uniform(0.9, 1.1) + 0.02 * rng.standard_normal((size, size))
        xs[i, 0] = img
        del any_lung
    return torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(ms)


class PlainCNN(nn.Module):
    def __init__(self, n_out: int = 3):
        super().__init__()
        self.c1, self.r1, self.p1 = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.c2, self.r2, self.p2 = nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.c3, self.r3 = nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        self.fc = nn.Linear(16 * 8 * 8, n_out)

    def forward(self, x):
        h = self.r3(self.c3(self.p2(self.r2(self.c2(self.p1(self.r1(self.c1(x))))))))
        return self.fc(h.reshape(x.shape[0], -1))


class ResCNN(nn.Module):
    """Two residual blocks (each nonlinearity its own module, as DeepLIFT and guided backprop require)."""

    def __init__(self, n_out: int = 3):
        super().__init__()
        self.c0, self.r0 = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.b1a, self.b1r, self.b1b, self.b1out = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.p1 = nn.MaxPool2d(2)
        self.c2, self.r2 = nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        self.b2a, self.b2r, self.b2b, self.b2out = nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        self.p2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 8 * 8, n_out)

    def forward(self, x):
        h = self.r0(self.c0(x))
        h = self.b1out(h + self.b1b(self.b1r(self.b1a(h))))
        h = self.r2(self.c2(self.p1(h)))
        h = self.b2out(h + self.b2b(self.b2r(self.b2a(h))))
        return self.fc(self.p2(h).reshape(x.shape[0], -1))


class WideCNN(nn.Module):
    def __init__(self, n_out: int = 3):
        super().__init__()
        self.c1, self.r1, self.p1 = nn.Conv2d(1, 24, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)
        self.c2, self.r2, self.p2 = nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(24 * 8 * 8, n_out)

    def forward(self, x):
        h = self.p2(self.r2(self.c2(self.p1(self.r1(self.c1(x))))))
        return self.fc(h.reshape(x.shape[0], -1))


def train_multilabel(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    """BCE-with-logits, Adam (weight decay 1e-4 as in the paper's code), batch 64."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4, foreach=True)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for s in range(0, x.shape[0], 64):
            idx = perm[s : s + 64]
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def attribution_methods(model: nn.Module) -> dict:
    """The paper's local methods with the settings of its ``attribution_calls.py`` (occlusion 4x4 windows, stride 4, for 32 px)."""
    return {
        "occlusion": lambda x, t: Occlusion(model).attribute(x, target=t, sliding_window_shapes=(1, 4, 4),
                                                             strides=(1, 4, 4), chunk_size=256),
        "saliency": lambda x, t: Saliency(model).attribute(x, target=t, abs=True),
        "input_x_gradient": lambda x, t: InputXGradient(model).attribute(x, target=t),
        "guided_backprop": lambda x, t: GuidedBackprop(model).attribute(x, target=t),
        "integrated_gradients": lambda x, t: IntegratedGradients(model).attribute(x, target=t, n_steps=50, chunk_size=1000),
        "deeplift": lambda x, t: DeepLift(model).attribute(x, target=t),
    }


def _one_seed(seed: int, n_train: int, n_test: int, epochs: int, n_eval: int, progress) -> dict:
    """Train the three members on one seed's data, score the ensembles and the localisation of every method."""
    x, y, _ = make_chest_images(n_train, seed)
    xt, yt, mt = make_chest_images(n_test, seed + 1)
    models = {}
    for j, cls in enumerate((PlainCNN, ResCNN, WideCNN)):
        torch.manual_seed(seed + j)
        models[cls.__name__] = train_multilabel(cls(), x, y, epochs, seed + j)
        progress(0.5 * (j + 1) / 3, f"trained {cls.__name__}")
    r: dict = {}
    with torch.no_grad():
        member_f1 = {name: micro_f1(yt, torch.sigmoid(m(xt)) > 0.5) for name, m in models.items()}
        vote = MultilabelEnsemble(list(models.values()), "majority").eval()
        soft = MultilabelEnsemble(list(models.values()), "average").eval()
        f1_vote, f1_soft = micro_f1(yt, vote.predict(xt)), micro_f1(yt, soft.predict(xt))
    for name, f in member_f1.items():
        r[f"micro_f1_{name}"] = f
    r.update(mean_member_micro_f1=float(np.mean(list(member_f1.values()))),
             best_member_micro_f1=max(member_f1.values()), worst_member_micro_f1=min(member_f1.values()),
             majority_vote_micro_f1=f1_vote, probability_average_micro_f1=f1_soft,
             all_positive_micro_f1=micro_f1(yt, torch.ones_like(yt)))
    # localisation: attribution mass inside the finding's mask, on test images where the finding is present
    by_method: dict[str, list[float]] = {}
    by_model: dict[str, list[float]] = {}
    chance: list[float] = []
    for li, finding in enumerate(FINDINGS):
        idx = torch.nonzero(yt[:, li] > 0)[:n_eval, 0]
        xe, me = xt[idx], mt[idx, li : li + 1]
        chance.append(float(me.float().mean()))
        for mname, model in models.items():
            for meth, fn in attribution_methods(model).items():
                a = fn(xe, li)
                v = float(torch.nanmean(attribution_mass_in_mask(a, me)))
                r[f"mass_{finding}_{mname}_{meth}"] = v
                by_method.setdefault(meth, []).append(v / chance[-1])
                by_model.setdefault(mname, []).append(v / chance[-1])
        progress(0.5 + 0.45 * (li + 1) / 3, f"explained {finding}")
    for m, v in by_method.items():
        r[f"mass_over_chance_{m}"] = float(np.mean(v))
    for m, v in by_model.items():
        r[f"model_mass_over_chance_{m}"] = float(np.mean(v))
    others = [float(np.mean(v)) for m, v in by_model.items() if m != RESNET]
    r["resnet_minus_best_other_mass_over_chance"] = r[f"model_mass_over_chance_{RESNET}"] - max(others)
    r["vote_minus_best_member_micro_f1"] = f1_vote - r["best_member_micro_f1"]
    r["min_method_mass_over_chance"] = min(r[f"mass_over_chance_{m}"] for m in by_method)
    r["chance_mass"] = float(np.mean(chance))
    r["_models"], r["_test"] = models, (xt, yt, mt)
    return r


@claim(paper=PAPER.key, title="Majority vote beats its best member; the residual network is the most interpretable",
       timeouts={"quick": 900})
def ensemble_and_localisation(run: ClaimRun) -> Evidence:
    t0 = time.time()
    n_train = run.pick(smoke=100, quick=2500, full=8000)
    epochs = run.pick(smoke=1, quick=4, full=8)
    n_eval = run.pick(smoke=2, quick=15, full=100)
    n_test = run.pick(smoke=60, quick=800, full=2000)
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    per_seed = []
    for i, seed in enumerate(seeds):
        per_seed.append(_one_seed(seed, n_train, n_test, epochs, n_eval,
                                  lambda f, msg, i=i: run.progress((i + 0.95 * f) / len(seeds), msg)))
    first = per_seed[0]
    models, (xt, yt, mt) = first["_models"], first["_test"]
    keys = [k for k in first if not k.startswith("_")]
    metrics: dict[str, object] = {"seeds": list(seeds)}
    for k in keys:
        metrics[k] = float(np.mean([r[k] for r in per_seed]))
    ci_vote = bootstrap_ci([r["vote_minus_best_member_micro_f1"] for r in per_seed], seed=run.seed)
    ci_res = bootstrap_ci([r["resnet_minus_best_other_mass_over_chance"] for r in per_seed], seed=run.seed)
    metrics["vote_minus_best_member_micro_f1_ci"] = ci_vote.to_json()
    metrics["resnet_minus_best_other_mass_over_chance_ci"] = ci_res.to_json()
    for k in ("vote_minus_best_member_micro_f1", "resnet_minus_best_other_mass_over_chance", "majority_vote_micro_f1",
              "best_member_micro_f1"):
        metrics[f"{k}_per_seed"] = [r[k] for r in per_seed]
    model_names = [n for n in models]
    model_score = {n: metrics[f"model_mass_over_chance_{n}"] for n in model_names}
    methods = list(attribution_methods(models[RESNET]))
    method_score = {m: metrics[f"mass_over_chance_{m}"] for m in methods}
    metrics["model_ranking"] = " > ".join(sorted(model_score, key=model_score.get, reverse=True))
    metrics["ranking"] = " > ".join(sorted(method_score, key=method_score.get, reverse=True))
    # neuron activation profiles of the plain CNN's last conv layer (first seed): no finding vs each finding
    groups = torch.cat([(yt.sum(1) == 0).unsqueeze(1), yt > 0], 1)
    nap = neuron_activation_profiles(models["PlainCNN"], {"r3": models["PlainCNN"].r3}, xt, groups,
                                     group_names=("no finding",) + FINDINGS, chunk_size=500)
    metrics["nap_dead_maps"] = int((~nap.alive["r3"]).sum())
    metrics["nap_top_maps"] = nap.top_maps("r3", 5).tolist()
    metrics["runtime_s"] = time.time() - t0
    headline = (
        Check("majority vote - best member micro-F1 (CI lower)", ci_vote.low, ">", 0.0),
        Check("ResCNN - best other model, lesion mass / chance (CI lower)", ci_res.low, ">", 0.0),
    )
    passed = bool(all(h.ok for h in headline))
    worst_margin = min(r["worst_member_micro_f1"] - r["all_positive_micro_f1"] for r in per_seed)
    preconditions = {"every member learned": Check("worst member micro-F1 minus all-positive micro-F1 (min over seeds)",
                                                   worst_margin, ">", 0.0)}

    fig = Figure(figsize=(13, 4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    member_names = [f"micro_f1_{n}" for n in model_names]
    names = model_names + ["majority vote", "prob. average"]
    vals = [metrics[k] for k in member_names] + [metrics["majority_vote_micro_f1"],
                                                 metrics["probability_average_micro_f1"]]
    ax1.bar(range(len(names)), vals, color=["C0"] * 3 + ["C1", "C2"])
    for j, k in enumerate(member_names + ["majority_vote_micro_f1", "probability_average_micro_f1"]):
        ax1.scatter(np.full(len(per_seed), j), [r[k] for r in per_seed], color="k", s=8, zorder=3)
    ax1.axhline(metrics["best_member_micro_f1"], color="k", ls="--", label="best member (mean over seeds)")
    ax1.set_xticks(range(len(names)), names, rotation=20)
    ax1.set_ylabel("test micro-F1 (bars: mean, dots: seeds)")
    ax1.set_ylim(min(0.5, min(vals) - 0.05), 1.0)
    ax1.set_title("Multilabel micro-F1")
    ax1.legend(fontsize=7)
    order = sorted(model_score, key=model_score.get, reverse=True)
    ax2.bar(range(len(order)), [model_score[n] for n in order], color=["C3" if n == RESNET else "C0" for n in order])
    ax2.axhline(1.0, color="r", ls="--", label="chance")
    ax2.set_xticks(range(len(order)), order)
    ax2.set_ylabel("|attr| mass in lesion / area fraction")
    ax2.set_title("Models ranked (mean over methods, findings)")
    ax2.legend(fontsize=7)
    ranking = sorted(method_score, key=method_score.get, reverse=True)
    ax3.bar(range(len(ranking)), [method_score[m] for m in ranking])
    ax3.axhline(1.0, color="r", ls="--", label="chance")
    ax3.set_xticks(range(len(ranking)), ranking, rotation=25, ha="right")
    ax3.set_title("Methods ranked (mean over models, findings)")
    ax3.legend(fontsize=7)
    fig3 = Figure(figsize=(9, 3))
    axes = fig3.subplots(1, 4)
    i0 = int(torch.nonzero(yt.sum(1) >= 2)[0, 0])
    axes[0].imshow(xt[i0, 0].numpy(), cmap="gray")
    axes[0].set_title("image")
    for li in range(3):
        axes[li + 1].imshow(mt[i0, li].numpy(), cmap="gray")
        axes[li + 1].set_title(f"{FINDINGS[li]} ({int(yt[i0, li])})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return Evidence(
        metrics=metrics,
        criterion=(f"over {len(seeds)} seeds (95% bootstrap CI of the per-seed differences): majority_vote_micro_f1 - "
                   "best_member_micro_f1 has CI lower bound > 0, and model_mass_over_chance_ResCNN - max(other "
                   "models') has CI lower bound > 0"),
        passed=passed,
        preconditions=preconditions,
        headline=headline,
        figures={"f1_and_ranking": fig, "example_masks": fig3},
        notes=(f"Synthetic 32x32 chest-like images with three findings (p=0.35 each), {n_train} training images per "
               f"seed, three CNNs (plain, residual, wide) trained {epochs} epochs with BCE; majority vote = positive "
               "when >= 2 of 3 members say so (the paper's text; its code averages probabilities, also reported). "
               f"Localisation: mean |attr| mass inside the finding mask over {n_eval} positive test images per finding "
               "and model, divided by the mask's area fraction (chance = 1); a model's score is its mean over the six "
               "methods and three findings, a method's over the models and findings. Unsuffixed numbers are means "
               "over seeds; NAP on the first seed. Real CXR data are not used."),
    )
