"""NoProp: Training Neural Networks without Back-propagation or Forward-propagation (arXiv 2503.24322).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.

Claim ``digits_dt`` ("a viable learning algorithm"; CPU stand-in for the paper's MNIST/CIFAR runs, research notes
§4c): scikit-learn digits (pixels / 16, fixed stratified 70/30 split), NoProp-DT with T = 10 MLP blocks
(x-path 64→128→128, z-path 10→128, fused 256→128→10), learned 10-d embedding initialised one-hot, cosine schedule
ᾱ_t = 0.999·cos²(π/2·(1 − t/T)), ᾱ_0 = 0, η = 0.1, AdamW lr 1e-3, weight decay 1e-3, batch 128, 50 epochs (the
paper's Table 3 settings for DT except the epoch count). The backprop baseline is an MLP made of one block's layers
without the label path (64→128→128→128→10, ReLU), trained by backprop with the same optimizer, epochs and batches.
Criterion: mean NoProp test accuracy (deterministic inference) ≥ 0.95, the 95% paired-bootstrap CI high of
(backprop − NoProp) accuracy over seeds ≤ 0.03, no block's loss has a gradient for another block's parameters, and
NoProp's peak bytes saved for backward in one training step ≤ 0.5× that of backprop through the whole chain of
blocks (the same parameters trained end to end). Reported, not judged: stochastic inference, the chained network's
accuracy when trained end to end (seed 0), NoProp-CT and NoProp-FM (:mod:`gradlab.training.noprop_continuous`, one
time-conditioned network of the same widths, 50 epochs, 100 inference steps, every seed).

Quick budget: 3 seeds × 50 epochs of NoProp-DT (≈0.5–1.2 s/epoch on one thread) dominate; the baseline MLP, CT and
FM add ≈5 s per seed and the chained network ≈40 s once. The documented exception to the 3-minute rule is ≤ 8 min
(the quick timeout is 600 s), because the issue fixes 50 epochs and a CI needs ≥ 3 seeds.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from matplotlib.figure import Figure

from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, bootstrap_ci, claim, paired_bootstrap_ci
from gradlab.core.datasets import Split, load_digits_split
from gradlab.training.noprop import NoPropDT
from gradlab.training.noprop_continuous import NoPropCT, NoPropFM

PAPER = Paper(
    key="noprop",
    title="NoProp: Training Neural Networks without Back-propagation or Forward-propagation",
    short_title="NoProp",
    cluster="training",
    arxiv="2503.24322",
    components=("gradlab.training.noprop", "gradlab.training.noprop_continuous", "gradlab.training.saved_memory"),
    statement=("Blocks that each learn to denoise a noisy label embedding on their own (a diffusion ELBO with "
               "SNR-difference weights, no gradient or forward pass crossing blocks) train a classifier to "
               "backprop-level accuracy with less activation memory."),
    revisions=(
        Revision(
            claim="digits_dt",
            date="2026-12-02",
            old=("accuracy gap and the 'baseline learned' precondition against the NoProp chain itself trained end to "
                 "end by backprop (cross-entropy of its deterministic inference output)"),
            new=("accuracy gap and precondition against a backprop-trained MLP of one block's layers without the label "
                 "path (same optimizer, epochs, batches); memory still against backprop through the whole chain; the "
                 "chained network's accuracy is reported"),
            reason=("the chained baseline trains through ten softmax-embedding bottlenecks mixed by the posterior "
                    "coefficients, an architecture made for NoProp's local losses, and reached 0.42-0.49 after 50 "
                    "epochs (0.80 at lr 3e-3) where a plain MLP reaches 0.97 on the same split: it measured our "
                    "chain's trainability, not backprop's accuracy, so the claim was inconclusive for a reason of our "
                    "own making. The research notes and the paper compare with a backprop-trained network; the new "
                    "baseline is stronger (0.97), so the criterion is not weaker"),
            old_result="inconclusive: chained backprop 0.42 < 0.9 (NoProp-DT 0.970)",
        ),
    ),
)

T_BLOCKS, HIDDEN, ETA, LR, WD, BATCH = 10, 128, 0.1, 1e-3, 1e-3, 128
CONTINUOUS_STEPS = 100  # inference steps of NoProp-CT / NoProp-FM (reported only)
ACC_MIN, GAP_MAX, MEMORY_MAX, BASELINE_MIN = 0.95, 0.03, 0.5, 0.9


def _accuracy(model: NoPropDT, x: torch.Tensor, y: torch.Tensor, noise: bool = False,
              generator: torch.Generator | None = None) -> float:
    return float((model.predict(x, noise=noise, generator=generator) == y).float().mean())


def backprop_mlp(in_features: int, num_classes: int, hidden: int = HIDDEN) -> nn.Sequential:
    """One NoProp block's layers without the label path: x-path ``in → h → h`` and head ``h → h → K`` (ReLU)."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def _mlp_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def train_models(seed: int, epochs: int, split: Split, n_train: int | None = None,
                 kinds: tuple[str, ...] = ("noprop", "backprop", "ct", "fm"), chained: bool = False
                 ) -> dict[str, object]:
    """Train NoProp-DT and the backprop MLP (and NoProp-CT / -FM; the chained NoProp network end to end when
    ``chained``) on the same batches of the first ``n_train`` training examples; per-epoch test accuracies.
    The chained network starts from NoProp-DT's initial weights."""
    torch.manual_seed(seed)
    models: dict[str, nn.Module] = {"noprop": NoPropDT(split.n_features, 10, T=T_BLOCKS, hidden=HIDDEN, eta=ETA)}
    if chained:
        models["chained"] = copy.deepcopy(models["noprop"])
    initial_noprop = copy.deepcopy(models["noprop"])
    if "backprop" in kinds:
        models["backprop"] = backprop_mlp(split.n_features, 10)
    if "ct" in kinds:
        models["ct"] = NoPropCT(split.n_features, 10, hidden=HIDDEN)
    if "fm" in kinds:
        models["fm"] = NoPropFM(split.n_features, 10, hidden=HIDDEN)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=WD, foreach=True) for k, m in models.items()}
    order = torch.Generator().manual_seed(seed)
    noise = {k: torch.Generator().manual_seed(seed + 1 + i) for i, k in enumerate(models)}
    curves: dict[str, list[float]] = {k: [] for k in models}
    n = split.y_train.shape[0] if n_train is None else min(n_train, split.y_train.shape[0])
    ce = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = split.x_train[idx], split.y_train[idx]
            for k, m in models.items():
                if k == "backprop":
                    opts[k].zero_grad(set_to_none=True)
                    ce(m(xb), yb).backward()
                    opts[k].step()
                elif k == "chained":
                    m.backprop_step(xb, yb, opts[k])
                else:
                    m.training_step(xb, yb, opts[k], generator=noise[k])
        last = epoch == epochs - 1
        for k, m in models.items():
            if k == "backprop":
                curves[k].append(_mlp_accuracy(m, split.x_test, split.y_test))
            elif k in ("ct", "fm"):
                if last:  # CONTINUOUS_STEPS network calls per evaluation: only the final one
                    curves[k].append(float((m.predict(split.x_test, steps=CONTINUOUS_STEPS) == split.y_test)
                                           .float().mean()))
            else:
                curves[k].append(_accuracy(m, split.x_test, split.y_test))
    return {"models": models, "opts": opts, "curves": curves, "initial_noprop": initial_noprop}


def cross_block_gradients(model: NoPropDT, x: torch.Tensor, y: torch.Tensor, seed: int) -> int:
    """Number of (t, s ≠ t) pairs whose block-t loss has a gradient (not None) for a parameter of block s."""
    gen = torch.Generator().manual_seed(seed)
    block_params = [list(b.parameters()) for b in model.blocks]
    flat = [p for ps in block_params for p in ps]
    count = 0
    for t in range(1, model.T + 1):
        grads = torch.autograd.grad(model.block_loss(t, x, y, gen), flat, allow_unused=True)
        k = 0
        for s, ps in enumerate(block_params, start=1):
            g = grads[k:k + len(ps)]
            k += len(ps)
            if s != t and any(gi is not None for gi in g):
                count += 1
    return count


@claim(paper=PAPER.key, title="NoProp-DT (10 MLP blocks, AdamW) reaches >= 0.95 digits test accuracy, within 0.03 "
       "of a backprop-trained MLP, with no cross-block gradients and <= 0.5x the saved activation bytes of backprop "
       "through the chain", timeouts={"smoke": 120, "quick": 600})
def digits_dt(run: ClaimRun) -> Evidence:
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    epochs = run.pick(smoke=1, quick=50, full=100)
    n_train = run.pick(smoke=256, quick=None, full=None)  # smoke proves the code path on 2 batches per epoch
    split = load_digits_split(test_fraction=0.3)
    acc = {k: [] for k in ("noprop", "backprop", "ct", "fm")}
    acc_np_noisy, cross, mem_np, mem_chain, curves = [], [], [], [], []
    chained_acc = float("nan")
    for i, s in enumerate(seeds):
        res = train_models(s, epochs, split, n_train, chained=(i == 0))
        models = res["models"]
        curves.append({k: v for k, v in res["curves"].items() if k in ("noprop", "backprop", "chained")})
        for k in acc:
            acc[k].append(res["curves"][k][-1])
        if "chained" in res["curves"]:
            chained_acc = res["curves"]["chained"][-1]
        noprop = models["noprop"]
        acc_np_noisy.append(_accuracy(noprop, split.x_test, split.y_test, noise=True,
                                      generator=torch.Generator().manual_seed(s + 2)))
        xb, yb = split.x_train[:BATCH], split.y_train[:BATCH]
        cross.append(cross_block_gradients(noprop, xb, yb, s))
        # one more real training step, measured (peak bytes autograd saves, Parameters excluded), against one step
        # of backprop through the whole chain of the same blocks (from NoProp's initial weights: bytes saved for
        # backward depend on shapes, not on the weights' values)
        mem_np.append(noprop.training_step(xb, yb, res["opts"]["noprop"], torch.Generator().manual_seed(s),
                                           measure_saved_bytes=True)["peak_saved_bytes"])
        chain = res["initial_noprop"]
        chain_opt = torch.optim.AdamW(chain.parameters(), lr=LR, weight_decay=WD, foreach=True)
        mem_chain.append(chain.backprop_step(xb, yb, chain_opt, measure_saved_bytes=True)["peak_saved_bytes"])
        run.progress((i + 1) / len(seeds), f"seed {s}")
    acc_np_a, acc_bp_a = np.array(acc["noprop"]), np.array(acc["backprop"])
    gap = paired_bootstrap_ci(acc_bp_a, acc_np_a)  # backprop − NoProp
    acc_ci = bootstrap_ci(acc_np_a)
    mem_ratio = float(max(m / b for m, b in zip(mem_np, mem_chain)))
    n_cross = int(sum(cross))
    passed = (float(acc_np_a.mean()) >= ACC_MIN and gap.high <= GAP_MAX and n_cross == 0
              and mem_ratio <= MEMORY_MAX)

    fig = Figure(figsize=(12, 4))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    ep = np.arange(1, epochs + 1)
    styles = {"noprop": ("tab:red", "NoProp-DT"), "backprop": ("tab:blue", "backprop MLP"),
              "chained": ("tab:gray", "NoProp chain trained by backprop (seed 0)")}
    for name, (col, label) in styles.items():
        rows = [c[name] for c in curves if name in c]
        if not rows:
            continue
        arr = np.array(rows)
        for row in arr:
            ax1.plot(ep, row, color=col, alpha=0.25, lw=0.8)
        ax1.plot(ep, arr.mean(0), color=col, label=label)
    for k, marker, col in (("ct", "s", "tab:purple"), ("fm", "^", "tab:green")):
        ax1.scatter([epochs] * len(acc[k]), acc[k], marker=marker, color=col, zorder=3,
                    label=f"NoProp-{k.upper()} (final, {CONTINUOUS_STEPS} steps)")
    ax1.axhline(ACC_MIN, color="k", ls="--", lw=1, label=f"bar {ACC_MIN}")
    ax1.set(xlabel="epoch", ylabel="test accuracy (deterministic inference)", ylim=(0, 1),
            title=f"digits, T = {T_BLOCKS} MLP blocks, {len(seeds)} seeds")
    ax1.legend(fontsize=8, loc="lower right")
    ax2.bar([0, 1], [np.mean(mem_chain) / 2**20, np.mean(mem_np) / 2**20], color=["tab:gray", "tab:red"])
    ax2.set(xticks=[0, 1], xticklabels=["backprop through the chain", "NoProp-DT"],
            ylabel="MiB saved for backward (peak)", title=f"one training step, batch {BATCH} (ratio {mem_ratio:.3f})")
    fig.tight_layout()
    return Evidence(
        metrics={
            "seeds": list(seeds), "epochs": epochs, "T": T_BLOCKS,
            "train_examples": int(split.y_train.shape[0] if n_train is None else n_train),
            "test_accuracy_noprop": acc["noprop"], "test_accuracy_backprop": acc["backprop"],
            "test_accuracy_noprop_stochastic": acc_np_noisy,
            "test_accuracy_noprop_mean": float(acc_np_a.mean()), "test_accuracy_noprop_ci": acc_ci.to_json(),
            "test_accuracy_backprop_mean": float(acc_bp_a.mean()),
            "accuracy_gap_backprop_minus_noprop": gap.to_json(),
            "test_accuracy_chained_backprop_seed0": chained_acc,
            "test_accuracy_noprop_ct": acc["ct"], "test_accuracy_noprop_ct_mean": float(np.mean(acc["ct"])),
            "test_accuracy_noprop_fm": acc["fm"], "test_accuracy_noprop_fm_mean": float(np.mean(acc["fm"])),
            "continuous_inference_steps": CONTINUOUS_STEPS,
            "cross_block_gradients": n_cross,
            "peak_saved_bytes_noprop": mem_np, "peak_saved_bytes_chained_backprop": mem_chain,
            "peak_saved_bytes_ratio": mem_ratio,
            "curves": curves,
        },
        criterion=(f"mean NoProp-DT test accuracy >= {ACC_MIN}, 95% paired-bootstrap CI high of (backprop MLP - "
                   f"NoProp) accuracy <= {GAP_MAX}, 0 cross-block gradients, and max over seeds of peak saved bytes "
                   f"per step NoProp / backprop through the chain <= {MEMORY_MAX}"),
        passed=bool(passed),
        preconditions={
            "backprop baseline learned": Check("mean backprop MLP test accuracy", float(acc_bp_a.mean()), ">=",
                                               BASELINE_MIN),
        },
        headline=(
            Check("NoProp-DT test accuracy (mean)", float(acc_np_a.mean()), ">=", ACC_MIN),
            Check("backprop MLP - NoProp accuracy (CI high)", gap.high, "<=", GAP_MAX),
            Check("peak saved bytes ratio", mem_ratio, "<=", MEMORY_MAX),
        ),
        figures={"noprop_digits": fig},
        notes=(
            f"NoProp-DT {acc_np_a.mean():.3f} vs backprop MLP {acc_bp_a.mean():.3f} (gap {gap}); stochastic inference "
            f"{np.mean(acc_np_noisy):.3f}; NoProp-CT {np.mean(acc['ct']):.3f}, NoProp-FM {np.mean(acc['fm']):.3f} "
            f"({CONTINUOUS_STEPS} inference steps); the NoProp chain trained end to end by backprop {chained_acc:.3f} "
            "(seed 0) — all reported, not judged. Peak saved bytes per step: the largest single graph of the "
            "block-by-block step (one block's loss, or CE + KL) vs the whole chain's graph; Parameters excluded. "
            f"{epochs} epochs (the issue's 50; the paper uses 100 on MNIST). Blocks are MLPs, not the paper's CNN."
        ),
    )
