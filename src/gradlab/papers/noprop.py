"""NoProp: Training Neural Networks without Back-propagation or Forward-propagation (arXiv 2503.24322).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.

Claim ``digits_dt`` ("a viable learning algorithm"; CPU stand-in for the paper's MNIST/CIFAR runs, research notes
§4c): scikit-learn digits (pixels / 16, fixed stratified 70/30 split), NoProp-DT with T = 10 MLP blocks
(x-path 64→128→128, z-path 10→128, fused 256→128→10), learned 10-d embedding initialised one-hot, cosine schedule
ᾱ_t = 0.999·cos²(π/2·(1 − t/T)), ᾱ_0 = 0, η = 0.1, AdamW lr 1e-3, weight decay 1e-3, batch 128, 50 epochs (the
paper's Table 3 settings for DT except the epoch count). The backprop baseline is the same chain of blocks, from the
same initial weights and on the same batches, trained end to end on the cross-entropy of its deterministic inference
output. Criterion (fixed before any run): mean NoProp test accuracy (deterministic inference) ≥ 0.95, the 95%
paired-bootstrap CI high of (backprop − NoProp) accuracy over seeds ≤ 0.03, no block's loss has a gradient for
another block's parameters, and NoProp's peak bytes saved for backward in one training step ≤ 0.5× the chained
backprop step's. Stochastic inference is reported. NoProp-CT and NoProp-FM are not implemented yet.

Quick budget (chosen before any accuracy was seen, from a timing of 2 epochs on the loaded 2-core machine:
≈1.2 s/epoch NoProp, ≈0.9 s/epoch backprop): 3 seeds × 50 epochs for both methods ≈ 5–6 min on one thread, the
documented exception to the 3-minute rule (≤ 8 min; the quick timeout is 600 s), because the issue fixes 50 epochs
and a CI needs ≥ 3 seeds. Measured: 224 s wall for the whole quick claim (seed 0) on the loaded machine.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, bootstrap_ci, claim, paired_bootstrap_ci
from gradlab.core.datasets import Split, load_digits_split
from gradlab.training.noprop import NoPropDT

PAPER = Paper(
    key="noprop",
    title="NoProp: Training Neural Networks without Back-propagation or Forward-propagation",
    short_title="NoProp",
    cluster="training",
    arxiv="2503.24322",
    components=("gradlab.training.noprop", "gradlab.training.saved_memory"),
    statement=("Blocks that each learn to denoise a noisy label embedding on their own (a diffusion ELBO with "
               "SNR-difference weights, no gradient or forward pass crossing blocks) train a classifier to "
               "backprop-level accuracy with less activation memory."),
)

T_BLOCKS, HIDDEN, ETA, LR, WD, BATCH = 10, 128, 0.1, 1e-3, 1e-3, 128
ACC_MIN, GAP_MAX, MEMORY_MAX, BASELINE_MIN = 0.95, 0.03, 0.5, 0.9


def _accuracy(model: NoPropDT, x: torch.Tensor, y: torch.Tensor, noise: bool = False,
              generator: torch.Generator | None = None) -> float:
    return float((model.predict(x, noise=noise, generator=generator) == y).float().mean())


def train_pair(seed: int, epochs: int, split: Split, n_train: int | None = None) -> dict[str, object]:
    """Train NoProp-DT and its chained-backprop twin (same initial weights, same batches) on the first ``n_train``
    training examples (all by default); per-epoch test accuracies."""
    torch.manual_seed(seed)
    noprop = NoPropDT(split.n_features, 10, T=T_BLOCKS, hidden=HIDDEN, eta=ETA)
    backprop = copy.deepcopy(noprop)
    opt_np = torch.optim.AdamW(noprop.parameters(), lr=LR, weight_decay=WD)
    opt_bp = torch.optim.AdamW(backprop.parameters(), lr=LR, weight_decay=WD)
    order = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    curves: dict[str, list[float]] = {"noprop": [], "backprop": []}
    n = split.y_train.shape[0] if n_train is None else min(n_train, split.y_train.shape[0])
    for _ in range(epochs):
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = split.x_train[idx], split.y_train[idx]
            noprop.training_step(xb, yb, opt_np, generator=noise_gen)
            backprop.backprop_step(xb, yb, opt_bp)
        curves["noprop"].append(_accuracy(noprop, split.x_test, split.y_test))
        curves["backprop"].append(_accuracy(backprop, split.x_test, split.y_test))
    return {"noprop": noprop, "backprop": backprop, "curves": curves, "opt_np": opt_np, "opt_bp": opt_bp}


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
       "of chained backprop, with no cross-block gradients and <= 0.5x its saved activation bytes",
       timeouts={"smoke": 120, "quick": 600})
def digits_dt(run: ClaimRun) -> Evidence:
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    epochs = run.pick(smoke=1, quick=50, full=100)
    n_train = run.pick(smoke=256, quick=None, full=None)  # smoke proves the code path on 2 batches per epoch
    split = load_digits_split(test_fraction=0.3)
    acc_np, acc_bp, acc_np_noisy, cross, mem_np, mem_bp = [], [], [], [], [], []
    curves = []
    for i, s in enumerate(seeds):
        res = train_pair(s, epochs, split, n_train)
        noprop, backprop = res["noprop"], res["backprop"]
        curves.append(res["curves"])
        acc_np.append(res["curves"]["noprop"][-1])
        acc_bp.append(res["curves"]["backprop"][-1])
        acc_np_noisy.append(_accuracy(noprop, split.x_test, split.y_test, noise=True,
                                      generator=torch.Generator().manual_seed(s + 2)))
        xb, yb = split.x_train[:BATCH], split.y_train[:BATCH]
        cross.append(cross_block_gradients(noprop, xb, yb, s))
        # one more real training step each, measured (peak bytes autograd saves, Parameters excluded)
        mem_np.append(noprop.training_step(xb, yb, res["opt_np"], torch.Generator().manual_seed(s),
                                           measure_saved_bytes=True)["peak_saved_bytes"])
        mem_bp.append(backprop.backprop_step(xb, yb, res["opt_bp"], measure_saved_bytes=True)["peak_saved_bytes"])
        run.progress((i + 1) / len(seeds), f"seed {s}")
    acc_np_a, acc_bp_a = np.array(acc_np), np.array(acc_bp)
    gap = paired_bootstrap_ci(acc_bp_a, acc_np_a)  # backprop − NoProp
    acc_ci = bootstrap_ci(acc_np_a)
    mem_ratio = float(max(m / b for m, b in zip(mem_np, mem_bp)))
    n_cross = int(sum(cross))
    passed = (float(acc_np_a.mean()) >= ACC_MIN and gap.high <= GAP_MAX and n_cross == 0
              and mem_ratio <= MEMORY_MAX)

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ep = np.arange(1, epochs + 1)
    for name, col in (("noprop", "tab:red"), ("backprop", "tab:blue")):
        arr = np.array([c[name] for c in curves])
        for row in arr:
            ax1.plot(ep, row, color=col, alpha=0.25, lw=0.8)
        ax1.plot(ep, arr.mean(0), color=col, label=f"{'NoProp-DT' if name == 'noprop' else 'chained backprop'}")
    ax1.axhline(ACC_MIN, color="k", ls="--", lw=1, label=f"bar {ACC_MIN}")
    ax1.set(xlabel="epoch", ylabel="test accuracy (deterministic inference)", ylim=(0, 1),
            title=f"digits, T = {T_BLOCKS} MLP blocks, {len(seeds)} seeds")
    ax1.legend(fontsize=8)
    ax2.bar([0, 1], [np.mean(mem_bp) / 2**20, np.mean(mem_np) / 2**20], color=["tab:blue", "tab:red"])
    ax2.set(xticks=[0, 1], xticklabels=["chained backprop", "NoProp-DT"], ylabel="MiB saved for backward (peak)",
            title=f"one training step, batch {BATCH} (ratio {mem_ratio:.3f})")
    fig.tight_layout()
    return Evidence(
        metrics={
            "seeds": list(seeds), "epochs": epochs, "T": T_BLOCKS,
            "train_examples": int(split.y_train.shape[0] if n_train is None else n_train),
            "test_accuracy_noprop": acc_np, "test_accuracy_backprop": acc_bp,
            "test_accuracy_noprop_stochastic": acc_np_noisy,
            "test_accuracy_noprop_mean": float(acc_np_a.mean()), "test_accuracy_noprop_ci": acc_ci.to_json(),
            "test_accuracy_backprop_mean": float(acc_bp_a.mean()),
            "accuracy_gap_backprop_minus_noprop": gap.to_json(),
            "cross_block_gradients": n_cross,
            "peak_saved_bytes_noprop": mem_np, "peak_saved_bytes_backprop": mem_bp,
            "peak_saved_bytes_ratio": mem_ratio,
            "curves": curves,
        },
        criterion=(f"mean NoProp-DT test accuracy >= {ACC_MIN}, 95% paired-bootstrap CI high of (backprop - NoProp) "
                   f"accuracy <= {GAP_MAX}, 0 cross-block gradients, and max over seeds of peak saved bytes per step "
                   f"NoProp / chained backprop <= {MEMORY_MAX}"),
        passed=bool(passed),
        preconditions={
            "backprop baseline learned": Check("mean backprop test accuracy", float(acc_bp_a.mean()), ">=",
                                               BASELINE_MIN),
        },
        headline=(
            Check("NoProp-DT test accuracy (mean)", float(acc_np_a.mean()), ">=", ACC_MIN),
            Check("backprop - NoProp accuracy (CI high)", gap.high, "<=", GAP_MAX),
            Check("peak saved bytes ratio", mem_ratio, "<=", MEMORY_MAX),
        ),
        figures={"noprop_digits": fig},
        notes=(
            f"NoProp-DT {acc_np_a.mean():.3f} vs backprop {acc_bp_a.mean():.3f} (gap {gap}); stochastic inference "
            f"{np.mean(acc_np_noisy):.3f} (reported). Peak saved bytes per step: the largest single graph of the "
            "block-by-block step (one block's loss, or CE + KL) vs the whole chain's graph; Parameters excluded. "
            f"{epochs} epochs (the issue's 50; the paper uses 100 on MNIST). Blocks are MLPs, not the paper's CNN. "
            "NoProp-CT and NoProp-FM are not implemented, so they are not reported."
        ),
    )
