"""Explainable AI Methods for Neuroimaging: Systematic Failures of Common Tools, the Need for Domain-Specific Validation, and a Proposal for Safe Application (arXiv 2508.02560).

Siegel et al. validate explanation methods on brain MRI prediction tasks whose signal source is known without
editing the images: Grad-CAM systematically fails to localise, SmoothGrad is consistently accurate.

Claim checked here, on synthetic "anatomy" images (a fixed head template plus subject-specific smooth
texture) whose label is a lateral texture asymmetry inside a fixed region R (no inserted or brighter lesion):
a small CNN learns the task; SmoothGrad's pixel AUROC for R *within the head* is near 1 and Grad-CAM's is near
chance (0.5), decided on 95% bootstrap CIs over seeds. The AUROC is computed within the head because the zero
background outside it is not "chance": an information-free head silhouette scores about 0.75 on the whole frame
(reported as the silhouette baseline) and exactly 0.5 within the head.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import nn

import numpy as np

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, bootstrap_ci, claim
from gradlab.explain.data import anatomy_template, make_anatomy_images
from gradlab.explain.evaluation import (
    attribution_mass_in_mask,
    evaluate_accuracy,
    mask_fraction,
    pixel_auroc,
    pointing_game,
)
from gradlab.explain.robust import train_classifier

PAPER = Paper(
    key="xai-neuroimaging",
    title="Explainable AI Methods for Neuroimaging: Systematic Failures of Common Tools, the Need for Domain-Specific Validation, and a Proposal for Safe Application",
    short_title="XAI for neuroimaging",
    cluster="explain",
    arxiv="2508.02560",
    components=(
        "gradlab.explain.data",
        "gradlab.explain.evaluation.localization",
        "gradlab.explain.gradients",
        "gradlab.explain.gradcam",
    ),
    statement=("GradCAM consistently failed to localize predictive features, while the simpler, gradient-based "
               "method SmoothGrad proved consistently accurate, on prediction tasks whose signal source is known "
               "without altering the input images."),
    revisions=(
        Revision(
            claim="smoothgrad_localises_gradcam_does_not",
            date="2026-12-01",
            old=("test_acc >= 0.8 and smoothgrad_pixel_auroc >= 0.9 and |gradcam_pixel_auroc - 0.5| <= 0.15, pixel "
                 "AUROC over the whole 32x32 frame, one seed"),
            new=("pixel AUROC within the head (valid_mask = head): lower 95% CI bound over seeds of SmoothGrad's "
                 ">= 0.9 and Grad-CAM's CI inside [0.35, 0.65]; precondition: every model's test accuracy >= 0.8"),
            reason=("Statistical flaw (issue 9, 2.2): the frame includes the zero background outside the head, so "
                    "chance is not 0.5 there (an information-free head silhouette scores 0.75); the band around 0.5 "
                    "only means chance within the head. One draw replaced by a CI over seeds; the accuracy "
                    "requirement is a precondition (a model that did not learn makes the test inconclusive)."),
            old_result="failed: test_acc 0.962, smoothgrad_pixel_auroc 0.9813, gradcam_pixel_auroc 0.6763 (frame)",
        ),
    ),
)

SG_AUROC_MIN = 0.90
GRADCAM_CHANCE_BAND = 0.15
ACC_MIN = 0.80
METHODS = ("smoothgrad", "gradcam", "saliency")


class _SmallCNN(nn.Module):
    """conv-relu-pool x2, conv-relu (8x8 maps: the Grad-CAM layer), two dense layers; no reused modules."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@claim(paper=PAPER.key, title="On images with a known signal region, SmoothGrad localises (AUROC near 1) and "
       "Grad-CAM is near chance", timeouts={"quick": 900})
def smoothgrad_localises_gradcam_does_not(run: ClaimRun) -> Evidence:
    from gradlab.explain import GradCAM, Saliency, SmoothGrad

    n_train = run.pick(smoke=200, quick=4000, full=10000)
    n_test = run.pick(smoke=60, quick=500, full=2000)
    n_explain = run.pick(smoke=8, quick=100, full=400)
    epochs = run.pick(smoke=1, quick=12, full=20)
    n_samples = run.pick(smoke=5, quick=50, full=50)
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    per_seed: list[dict[str, float]] = []
    shown = None
    for i, s in enumerate(seeds):
        data = make_anatomy_images(s, n_train=n_train, n_test=n_test)
        head = (anatomy_template(data.x_test.shape[-1]) > 0).expand_as(data.mask_test[:n_explain])
        run.progress(i / len(seeds), f"seed {s}: training the CNN")
        torch.manual_seed(s)
        model = train_classifier(_SmallCNN(), data.x_train, data.y_train, epochs=epochs, lr=1e-3, seed=s,
                                 progress=lambda f, i=i: run.progress((i + 0.8 * f) / len(seeds), "training the CNN"))
        acc = evaluate_accuracy(model, data.x_test, data.y_test)
        x, y, m = data.x_test[:n_explain], data.y_test[:n_explain], data.mask_test[:n_explain]
        run.progress((i + 0.8) / len(seeds), f"seed {s}: attributions")
        maps = {
            "smoothgrad": SmoothGrad(model).attribute(x, target=y, n_samples=n_samples, noise_level=0.1, seed=s,
                                                      chunk_size=1024),
            "gradcam": GradCAM(model, model.features[7]).attribute(x, target=y, relu=True,
                                                                   interpolate_mode="bilinear"),
            "saliency": Saliency(model).attribute(x, target=y),
            "silhouette": head.float(),  # information-free baseline: where the head is
        }
        r: dict[str, float] = {"test_acc": acc, "chance_mass": float(mask_fraction(m).mean()),
                               "chance_mass_in_head": float(mask_fraction(m, valid_mask=head).mean())}
        for name, a in maps.items():
            r[f"{name}_pixel_auroc"] = float(pixel_auroc(a, m, valid_mask=head).mean())
            r[f"{name}_pixel_auroc_frame"] = float(pixel_auroc(a, m).mean())
            r[f"{name}_mass_in_region"] = float(attribution_mass_in_mask(a, m, valid_mask=head).nanmean())
            r[f"{name}_pointing_game"] = float(pointing_game(a, m, valid_mask=head).mean())
            r[f"{name}_all_zero_fraction"] = float((a.flatten(1).abs().sum(1) == 0).float().mean())
        per_seed.append(r)
        if shown is None:
            shown = (data, maps, m, y, acc)

    metrics: dict[str, object] = {"seeds": list(seeds)}
    for k in per_seed[0]:
        metrics[k] = float(np.mean([r[k] for r in per_seed]))
    cis = {}
    for name in METHODS + ("silhouette",):
        key = f"{name}_pixel_auroc"
        cis[name] = bootstrap_ci([r[key] for r in per_seed], seed=run.seed)
        metrics[f"{key}_ci"] = cis[name].to_json()
        metrics[f"{key}_per_seed"] = [r[key] for r in per_seed]
    metrics["test_acc_min"] = float(min(r["test_acc"] for r in per_seed))
    sg, gc = cis["smoothgrad"], cis["gradcam"]
    headline = (
        Check("SmoothGrad pixel AUROC in head (CI lower)", sg.low, ">=", SG_AUROC_MIN),
        Check("Grad-CAM pixel AUROC in head (CI upper)", gc.high, "<=", 0.5 + GRADCAM_CHANCE_BAND),
        Check("Grad-CAM pixel AUROC in head (CI lower)", gc.low, ">=", 0.5 - GRADCAM_CHANCE_BAND),
    )
    passed = bool(all(h.ok for h in headline))
    preconditions = {"every model learned": Check("lowest test accuracy over seeds", metrics["test_acc_min"], ">=",
                                                  ACC_MIN)}

    data, maps, m, y, acc = shown
    fig = Figure(figsize=(10, 6.5))
    axes = fig.subplots(3, 5)
    for col in range(5):
        row_data = [(data.x_test[col, 0], "image + region R"), (maps["smoothgrad"][col, 0].abs(), "|SmoothGrad|"),
                    (maps["gradcam"][col, 0], "Grad-CAM (ReLU, bilinear)")]
        for row, (img, title) in enumerate(row_data):
            ax = axes[row, col]
            ax.imshow(img.numpy(), cmap="gray" if row == 0 else "magma")
            ax.contour(m[col, 0].float().numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_title(f"{title}, y={int(y[col])}" if row == 0 else title, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"Known-signal anatomy task, first seed (test acc {acc:.2f}); pixel AUROC within the head over "
                 f"{len(seeds)} seeds: SmoothGrad {sg.mean:.3f}, Grad-CAM {gc.mean:.3f}, Saliency "
                 f"{cis['saliency'].mean:.3f}, head silhouette {cis['silhouette'].mean:.3f} "
                 f"(on the frame {metrics['silhouette_pixel_auroc_frame']:.3f})", fontsize=8)
    fig2 = Figure(figsize=(6, 3.4))
    ax = fig2.subplots()
    names = list(METHODS) + ["silhouette"]
    for j, name in enumerate(names):
        ys = metrics[f"{name}_pixel_auroc_per_seed"]
        ax.scatter(np.full(len(ys), j) - 0.1, ys, color="tab:blue", s=14, label="within head" if j == 0 else None)
        ys2 = [r[f"{name}_pixel_auroc_frame"] for r in per_seed]
        ax.scatter(np.full(len(ys2), j) + 0.1, ys2, color="grey", s=14, marker="x",
                   label="whole frame (old)" if j == 0 else None)
    ax.axhspan(0.5 - GRADCAM_CHANCE_BAND, 0.5 + GRADCAM_CHANCE_BAND, color="tab:orange", alpha=0.15,
               label="chance band (Grad-CAM)")
    ax.axhline(SG_AUROC_MIN, color="tab:green", ls="--", lw=1, label=f"SmoothGrad threshold {SG_AUROC_MIN}")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("pixel AUROC for R (one dot per seed)")
    ax.legend(fontsize=7)
    return Evidence(
        metrics=metrics,
        criterion=(f"pixel AUROC of |attribution| for R within the head, 95% bootstrap CI over {len(seeds)} seeds: "
                   f"SmoothGrad's lower bound >= {SG_AUROC_MIN}; Grad-CAM's interval inside "
                   f"[{0.5 - GRADCAM_CHANCE_BAND}, {0.5 + GRADCAM_CHANCE_BAND}]"),
        passed=passed,
        preconditions=preconditions,
        headline=headline,
        figures={"maps": fig, "auroc_per_seed": fig2},
        notes=(f"32x32 synthetic anatomy (head template + Gaussian random field texture, smoothness 2 px); label = "
               f"sign of the left-minus-right texture inside a fixed disk R (mean intensity in R independent of the "
               f"label). CNN with 8x8 last conv layer, Adam {epochs} epochs on {n_train} images, one model per seed. "
               f"Scores over {n_explain} test images, target = true label: pixel AUROC of |attribution| for R among "
               "the head's pixels (valid_mask); '*_frame' is the same over the whole frame (the old statistic), "
               "'silhouette' the information-free baseline that is 1 on the head. SmoothGrad: "
               f"signed mean of {n_samples} gradients, sigma = 0.1 x image range (gradlab.explain.SmoothGrad); "
               "Grad-CAM on the last conv layer with ReLU and bilinear upsampling. Unsuffixed numbers are means "
               "over seeds. The paper uses 3D CNNs on UK-Biobank MRI; its exact metric was not available, pixel "
               "AUROC is our choice (from the issue)."),
    )
