"""Network Memory Footprint Compression Through Jointly Learnable Codebooks and Mappings (arXiv 2309.17361).

Yvinec, Dapogny & Bailly (ICLR 2024) compress weights to ``b``-bit indices into small fp16 codebooks by
(1) grouping similarly distributed neurons (re-ordered, the permutation absorbed by the next layer) with a
codebook per group, (2) learning codebooks and mappings jointly on calibration data, (3) with a proximal mapping
search. Components: :mod:`gradlab.compression` (our reading of the unpublished mapping estimator, see
:mod:`gradlab.compression.joint`).

Claim ``equal_bits`` (CPU stand-in for the paper's ImageNet/LLM experiments; design and measured prototype in
the research notes, sciml_systems §6): an MLP 64-256-256-16 trained on ``sklearn.make_classification``
(16 classes, 48 informative features), all three weight matrices at 2-bit indices (biases fp32), compared with
per-channel uniform quantisation and one k-means codebook per tensor; 8 groups; storage measured from the
packed representation. Decided over seeds (each seed: new data, new network, new calibration draw) on paired
bootstrap CIs.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, claim, paired_bootstrap_ci
from gradlab.compression import (
    JLCM,
    CompressedModel,
    bits_per_weight_formula,
    kmeans_quantize,
    layer_output_errors,
    prediction_kl,
    uniform_quantize,
    weight_errors,
)
from gradlab.core.seeding import seed_everything

PAPER = Paper(
    key="jlcm",
    title="Network Memory Footprint Compression Through Jointly Learnable Codebooks and Mappings",
    short_title="JLCM codebooks",
    cluster="numerics",
    arxiv="2309.17361",
    components=(
        "gradlab.compression.jlcm", "gradlab.compression.joint", "gradlab.compression.codebooks",
        "gradlab.compression.grouping", "gradlab.compression.permute", "gradlab.compression.kmeans",
        "gradlab.compression.storage", "gradlab.compression.packing", "gradlab.compression.model",
        "gradlab.compression.baselines", "gradlab.compression.metrics",
    ),
    statement=("At an equal index budget, codebooks for groups of similarly distributed neurons whose values and "
               "mappings are learned jointly on calibration data reconstruct a network better than k-means or "
               "uniform quantisation and keep more of its accuracy, at an overhead of a few fp16 codewords."),
)

N_FEATURES, N_CLASSES, HIDDEN = 64, 16, 256
BITS, GROUPS = 2, 8
METHODS = ("uniform", "kmeans", "groups", "jlcm")
LABELS = {"uniform": "uniform\n(per channel)", "kmeans": "k-means\n(per tensor)", "groups": "groups\n(JLCM init)",
          "jlcm": "JLCM\n(joint)"}


def make_mlp(seed: int) -> nn.Module:
    """The MLP 64-256-256-16 with ReLUs (layers ``fc1``, ``fc2``, ``fc3``)."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(N_FEATURES, HIDDEN), act1=nn.ReLU(),
                                     fc2=nn.Linear(HIDDEN, HIDDEN), act2=nn.ReLU(),
                                     fc3=nn.Linear(HIDDEN, N_CLASSES)))


def make_task(seed: int, n_train: int, n_test: int) -> tuple[torch.Tensor, ...]:
    """``make_classification`` (16 classes, 64 features, 48 informative), standardised with train statistics."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n_train + n_test, n_features=N_FEATURES, n_informative=48,
                               n_classes=N_CLASSES, random_state=seed)
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-8)
    return (xtr - mean) / std, ytr, (xte - mean) / std, yte


def train_mlp(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, batch: int = 128) -> nn.Module:
    """Adam (lr 1e-3), cross-entropy, shuffled minibatches of ``batch``; returns the model in eval mode."""
    model = make_mlp(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    gen = torch.Generator().manual_seed(seed)
    ce = nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            ce(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def evaluate(cm: CompressedModel, fp_logits: torch.Tensor, calib: torch.Tensor, x_test: torch.Tensor,
             y_test: torch.Tensor) -> dict[str, float]:
    """Accuracy, top-1 agreement and KL(fp || q) on the test set; layer-output and weight errors (means over the
    compressed layers; output errors with float inputs, on held-out test inputs and on the calibration inputs);
    measured storage rate."""
    logits = cm.module(x_test)
    st = cm.storage()
    return {
        "accuracy": float((logits.argmax(1) == y_test).float().mean()),
        "agreement": float((logits.argmax(1) == fp_logits.argmax(1)).float().mean()),
        "kl": prediction_kl(fp_logits, logits),
        "out_err": float(np.mean(list(layer_output_errors(cm, x_test).values()))),
        "out_err_calib": float(np.mean(list(layer_output_errors(cm, calib).values()))),
        "w_err": float(np.mean(list(weight_errors(cm).values()))),
        "bits_per_weight": st.bits_per_weight,
        "bytes": st.total_bytes,
    }


def run_seed(seed: int, *, n_train: int, n_test: int, epochs: int, n_calib: int, steps: int,
             bits: int = BITS, groups: int = GROUPS, mode: str = "codebooks") -> dict[str, dict[str, float]]:
    """Train the float MLP for one seed and evaluate the four methods at ``bits``; returns ``{method: metrics}``
    plus ``"fp"`` (float accuracy), ``"formula"`` (paper-style bits/weight of each compressed layer) and
    ``"warnings"``."""
    seed_everything(seed)
    xtr, ytr, xte, yte = make_task(seed, n_train, n_test)
    model = train_mlp(xtr, ytr, epochs, seed)
    with torch.no_grad():
        fp_logits = model(xte)
    calib = xtr[torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + 1))[:n_calib]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jl = JLCM(bits=bits, groups=groups, mode=mode, steps=steps, seed=seed).fit(model, calib)
    methods = {"uniform": uniform_quantize(model, bits), "kmeans": kmeans_quantize(model, bits, seed=seed),
               "groups": jl.initial_, "jlcm": jl.compressed_}
    out: dict = {m: evaluate(cm, fp_logits, calib, xte, yte) for m, cm in methods.items()}
    out["fp"] = {"accuracy": float((fp_logits.argmax(1) == yte).float().mean())}
    out["formula"] = {n: bits_per_weight_formula(bits, min(groups, cw.shape[0]), cw.numel, mode)
                      for n, cw in jl.compressed_.weights.items()}
    out["measured"] = {n: cw.bits_per_weight for n, cw in jl.compressed_.weights.items()}
    out["warnings"] = sorted({str(w.message).split(":")[1].strip() for w in caught})
    return out


def _figure(per_seed: list[dict], fp_acc: list[float]) -> Figure:
    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 3)
    xs = np.arange(len(METHODS))
    for ax, key, title in zip(axes, ("out_err", "kl", "accuracy"),
                              ("layer-output error (held-out, mean of 3 layers)", "KL(fp || quantised), test",
                               "test accuracy")):
        vals = np.array([[r[m][key] for m in METHODS] for r in per_seed])
        for j in range(vals.shape[0]):
            ax.plot(xs, vals[j], "o-", color="0.7", ms=3, lw=0.8)
        ax.bar(xs, vals.mean(0), color=["tab:gray", "tab:blue", "tab:cyan", "tab:red"], alpha=0.7)
        if key == "accuracy":
            ax.axhline(float(np.mean(fp_acc)), ls="--", color="k", lw=1, label="float model")
            ax.legend(fontsize=8)
        ax.set_xticks(xs)
        bpw = [np.mean([r[m]["bits_per_weight"] for r in per_seed]) for m in METHODS]
        ax.set_xticklabels([f"{LABELS[m]}\n{b:.3f} b/w" for m, b in zip(METHODS, bpw)], fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"MLP 64-256-256-16, {BITS}-bit indices, {GROUPS} groups ({len(per_seed)} seeds; grey = one seed)",
                 fontsize=10)
    fig.tight_layout()
    return fig


@claim(paper=PAPER.key, title="At 2-bit indices JLCM's grouped, jointly learned codebooks beat k-means and uniform "
       "quantisation in output error and KL without losing accuracy", timeouts={"smoke": 120, "quick": 600})
def equal_bits(run: ClaimRun) -> Evidence:
    seeds = run.seeds(run.pick(smoke=2, quick=5, full=10))
    n_train = run.pick(smoke=1500, quick=8000, full=16000)
    n_test = run.pick(smoke=500, quick=4000, full=8000)
    epochs = run.pick(smoke=4, quick=40, full=60)
    n_calib = run.pick(smoke=256, quick=1024, full=2048)
    steps = run.pick(smoke=40, quick=400, full=800)
    per_seed = []
    for i, s in enumerate(seeds):
        per_seed.append(run_seed(s, n_train=n_train, n_test=n_test, epochs=epochs, n_calib=n_calib, steps=steps))
        run.progress((i + 1) / len(seeds), f"seed {s} done")

    def col(method: str, key: str) -> np.ndarray:
        return np.array([r[method][key] for r in per_seed])

    err = {m: col(m, "out_err") for m in METHODS}
    kl = {m: col(m, "kl") for m in METHODS}
    acc = {m: col(m, "accuracy") for m in METHODS}
    fp_acc = [r["fp"]["accuracy"] for r in per_seed]
    ci_kmeans_uniform = paired_bootstrap_ci(err["kmeans"], 0.6 * err["uniform"])
    ci_groups_kmeans = paired_bootstrap_ci(err["groups"], err["kmeans"])
    ci_jlcm_init = paired_bootstrap_ci(err["jlcm"], 0.95 * err["groups"])
    ci_kl = paired_bootstrap_ci(kl["jlcm"], kl["kmeans"])
    ci_acc = paired_bootstrap_ci(acc["jlcm"], acc["kmeans"])
    checks = {
        "kmeans_vs_uniform": ci_kmeans_uniform.below(0.0),
        "groups_vs_kmeans": ci_groups_kmeans.below(0.0),
        "jlcm_vs_init": ci_jlcm_init.below(0.0),
        "kl_jlcm_vs_kmeans": ci_kl.below(0.0),
        "accuracy_jlcm_vs_kmeans": ci_acc.above(-0.005),
    }
    formula = per_seed[0]["formula"]
    measured = per_seed[0]["measured"]
    metrics: dict = {
        "seeds": list(seeds), "bits": BITS, "groups": GROUPS, "fp_accuracy": fp_acc,
        "fp_accuracy_min": float(min(fp_acc)),
        **{f"{m}_{k}_mean": float(col(m, k).mean()) for m in METHODS
           for k in ("out_err", "out_err_calib", "kl", "accuracy", "agreement", "w_err", "bits_per_weight")},
        **{f"{m}_out_err": err[m].tolist() for m in METHODS},
        **{f"{m}_kl": kl[m].tolist() for m in METHODS},
        **{f"{m}_accuracy": acc[m].tolist() for m in METHODS},
        "jlcm_over_init_out_err_mean": float((err["jlcm"] / err["groups"]).mean()),
        "kmeans_over_uniform_out_err_mean": float((err["kmeans"] / err["uniform"]).mean()),
        # informational (not in the criterion): the same ratios of *squared* relative errors, the form of the
        # research notes' prototype table from which the issue's thresholds were taken
        "kmeans_over_uniform_squared_out_err_mean": float(((err["kmeans"] / err["uniform"]) ** 2).mean()),
        "jlcm_over_init_squared_out_err_mean": float(((err["jlcm"] / err["groups"]) ** 2).mean()),
        "ci_kmeans_minus_0.6_uniform_out_err": ci_kmeans_uniform.to_json(),
        "ci_groups_minus_kmeans_out_err": ci_groups_kmeans.to_json(),
        "ci_jlcm_minus_0.95_init_out_err": ci_jlcm_init.to_json(),
        "ci_jlcm_minus_kmeans_kl": ci_kl.to_json(),
        "ci_jlcm_minus_kmeans_accuracy": ci_acc.to_json(),
        "checks": checks,
        "jlcm_layer_bits_per_weight_measured": measured,
        "jlcm_layer_bits_per_weight_formula": formula,
        "storage_matches_formula": all(abs(measured[n] - formula[n]) < 1e-12 for n in formula),
        "jlcm_bytes": per_seed[0]["jlcm"]["bytes"], "kmeans_bytes": per_seed[0]["kmeans"]["bytes"],
        "uniform_bytes": per_seed[0]["uniform"]["bytes"],
    }
    passed = all(checks.values())
    return Evidence(
        metrics=metrics,
        criterion=("over seeds, paired bootstrap 95% CIs of the per-seed differences (output error = mean over the 3 "
                   "layers of ||f(X;Ŵ)-f(X;W)||/||f(X;W)|| with float inputs X from held-out test data): "
                   "CI(err_kmeans - 0.6*err_uniform) < 0, CI(err_groups - err_kmeans) < 0, "
                   "CI(err_jlcm - 0.95*err_jlcm_init) < 0, CI(KL_jlcm - KL_kmeans) < 0 (KL(fp||q) on test), and "
                   "CI(acc_jlcm - acc_kmeans) > -0.005; all at 2-bit indices, 8 groups"),
        passed=bool(passed),
        preconditions={"float model learned (min test accuracy over seeds; chance 1/16)":
                       Check("float test accuracy", float(min(fp_acc)), ">=", 0.5)},
        headline=(
            Check("k-means - 0.6 x uniform output error, CI high", ci_kmeans_uniform.high, "<", 0.0),
            Check("groups - k-means output error, CI high", ci_groups_kmeans.high, "<", 0.0),
            Check("JLCM - 0.95 x init output error, CI high", ci_jlcm_init.high, "<", 0.0),
            Check("KL JLCM - KL k-means, CI high", ci_kl.high, "<", 0.0),
            Check("accuracy JLCM - k-means, CI low", ci_acc.low, ">", -0.005),
        ),
        figures={"equal_bits": _figure(per_seed, fp_acc)},
        notes=(f"{len(seeds)} seeds; {n_train} train / {n_test} test samples, {epochs} epochs of Adam, {n_calib} "
               f"calibration inputs, {steps} joint-learning steps per layer. Groups: equal-size, neurons sorted by "
               "the first principal component of their weight quantiles (our choice; the paper's grouping is not "
               "specified). Mapping estimator: our proximal reading (each weight moves between its two neighbouring "
               "codewords), the paper's is unpublished. Uniform = per-channel min-max with fp16 scale and offset "
               "(more overhead than the codebooks; see bits/weight). Biases stay fp32. Output errors are norm "
               "ratios ||ΔY||/||Y||; the research notes' prototype table (source of the 0.6 and 0.95 factors) "
               "reports squared ratios, for which the same factors are weaker: the squared "
               "ratios are listed as *_squared_* metrics, not used by the criterion. Layers not re-ordered: "
               f"{per_seed[0]['warnings']}. Accuracy on a small task saturates; output error and KL are the "
               "primary measures."),
    )
