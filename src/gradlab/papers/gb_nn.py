"""Sequential Training of Neural Networks with Gradient Boosting (arXiv 1909.12098).

Claim ``digits_prune_units``: the paper states that GBNN generalises competitively with a network of the same size
trained by a standard optimiser, and that its last-trained hidden units can be switched off at test time "without a
significant reduction" in accuracy. CPU stand-in (research notes §3c): scikit-learn digits (70/30 stratified split,
standardised), GBNN with T = 60 rounds of J = 2 sigmoid units (120 units; L-BFGS 100 iterations per round, weight
decay 1e-3, subsample 0.5, learning rate 1) vs a 120-sigmoid-unit one-hidden-layer MLP trained by Adam (lr 1e-2,
300 full-batch epochs). Test accuracy is measured with all units and with the first 75/50/25/10% of hidden units
(GBNN: the first rounds; MLP: the first units, the others' output weights set to zero).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, claim, paired_bootstrap_ci
from gradlab.core.datasets import load_digits_split
from gradlab.training.gbnn import GradientBoostedNetClassifier

PAPER = Paper(
    key="gb-nn",
    title="Sequential Training of Neural Networks with Gradient Boosting",
    short_title="Gradient-boosted NN",
    cluster="training",
    arxiv="1909.12098",
    components=("gradlab.training.gbnn",),
    statement=("Training a one-hidden-layer network as a gradient-boosted sum of small sigmoid nets (one Newton step "
               "per round) generalises competitively with a conventionally trained network, and its last-trained "
               "units can be switched off at test time without a significant loss of accuracy."),
)

KEEP_FRACTIONS = (1.0, 0.75, 0.5, 0.25, 0.1)
FULL_MARGIN, PRUNE_MARGIN, GAP_MIN = 0.03, 0.02, 0.10
ADAM_LR = 1e-2


def mlp_accuracies(x_tr, y_tr, x_te, y_te, *, units: int, epochs: int, seed: int,  # noqa: ANN001
                   fractions=KEEP_FRACTIONS) -> list[float]:  # noqa: ANN001
    """Test accuracy of an Adam-trained sigmoid MLP keeping the first ``round(f * units)`` hidden units."""
    torch.manual_seed(seed)
    k = int(y_tr.max()) + 1
    model = nn.Sequential(nn.Linear(x_tr.shape[1], units), nn.Sigmoid(), nn.Linear(units, k))
    opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR, foreach=True)
    ce = nn.CrossEntropyLoss()
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        ce(model(x_tr), y_tr).backward()
        opt.step()
    accs = []
    with torch.no_grad():
        hid = model[1](model[0](x_te))
        for f in fractions:
            keep = int(round(f * units))
            out = hid[:, :keep] @ model[2].weight[:, :keep].T + model[2].bias
            accs.append(float((out.argmax(1) == y_te).float().mean()))
    return accs


def gbnn_accuracies(x_tr, y_tr, x_te, y_te, *, rounds: int, units_per_round: int, max_iter: int,  # noqa: ANN001
                    seed: int, fractions=KEEP_FRACTIONS) -> list[float]:  # noqa: ANN001
    """Test accuracy of GBNN keeping the first ``round(f * rounds)`` rounds (= the first units)."""
    est = GradientBoostedNetClassifier(n_rounds=rounds, units_per_round=units_per_round, max_iter=max_iter,
                                       alpha=1e-3, subsample=0.5, learning_rate=1.0, random_state=seed)
    est.fit(x_tr.numpy(), y_tr.numpy())
    yt = y_te.numpy()
    return [float((est.predict(x_te.numpy(), n_rounds=int(round(f * rounds))) == yt).mean()) for f in fractions]


@claim(paper=PAPER.key, title="On digits, GBNN (60 rounds x 2 units) is within 0.03 of a 120-unit Adam MLP, and at "
       "25% of its units keeps its accuracy (-0.02) and beats the equally pruned MLP by > 0.10",
       timeouts={"smoke": 120, "quick": 600})
def digits_prune_units(run: ClaimRun) -> Evidence:
    rounds = run.pick(smoke=8, quick=60, full=60)
    j = 2
    max_iter = run.pick(smoke=20, quick=100, full=100)
    epochs = run.pick(smoke=60, quick=300, full=300)
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=10))
    n_train = run.pick(smoke=300, quick=None, full=None)
    split = load_digits_split(test_fraction=0.3, standardize=True, dtype=torch.float64)
    x_tr, y_tr, x_te, y_te = split.x_train, split.y_train, split.x_test, split.y_test
    if n_train is not None:
        x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    units = rounds * j
    gb, mlp = [], []
    for i, s in enumerate(seeds):
        gb.append(gbnn_accuracies(x_tr, y_tr, x_te, y_te, rounds=rounds, units_per_round=j, max_iter=max_iter,
                                  seed=s))
        run.progress((2 * i + 1) / (2 * len(seeds)), f"GBNN seed {s}")
        mlp.append(mlp_accuracies(x_tr.float(), y_tr, x_te.float(), y_te, units=units, epochs=epochs, seed=s))
        run.progress((2 * i + 2) / (2 * len(seeds)), f"MLP seed {s}")
    gb_a, mlp_a = np.asarray(gb), np.asarray(mlp)
    i25 = KEEP_FRACTIONS.index(0.25)
    full_ci = paired_bootstrap_ci(gb_a[:, 0], mlp_a[:, 0])
    prune_ci = paired_bootstrap_ci(gb_a[:, i25], gb_a[:, 0])
    gap_ci = paired_bootstrap_ci(gb_a[:, i25], mlp_a[:, i25])
    full_ok = full_ci.low >= -FULL_MARGIN
    prune_ok = prune_ci.low >= -PRUNE_MARGIN
    gap_ok = gap_ci.low > GAP_MIN

    metrics: dict[str, object] = {
        "rounds": rounds, "units_per_round": j, "units": units, "lbfgs_max_iter": max_iter, "mlp_epochs": epochs,
        "seeds": list(seeds), "n_train": int(x_tr.shape[0]), "n_test": int(x_te.shape[0]),
        "keep_fractions": list(KEEP_FRACTIONS),
        "gbnn_acc_mean": gb_a.mean(0).tolist(), "mlp_acc_mean": mlp_a.mean(0).tolist(),
        "gbnn_acc_per_seed": gb_a.tolist(), "mlp_acc_per_seed": mlp_a.tolist(),
        "full_gbnn_minus_mlp": full_ci.to_json(), "gbnn_25pct_minus_full": prune_ci.to_json(),
        "gbnn_minus_mlp_at_25pct": gap_ci.to_json(),
    }
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    pct = [100 * f for f in KEEP_FRACTIONS]
    for arr, label, col in ((gb_a, f"GBNN ({rounds} rounds x {j} units)", "tab:red"),
                            (mlp_a, f"Adam MLP ({units} units)", "tab:blue")):
        ax.plot(pct, arr.mean(0), "o-", color=col, label=label)
        ax.fill_between(pct, arr.min(0), arr.max(0), color=col, alpha=0.15)
    ax.set(xlabel="% of hidden units kept (first-trained / first-indexed)", ylabel="test accuracy",
           title=f"digits: switching off the last units ({len(seeds)} seeds)")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()

    def fmt(ci) -> str:  # noqa: ANN001
        return f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"

    return Evidence(
        metrics=metrics,
        criterion=(f"paired 95% bootstrap CIs over seeds: (a) full test accuracy GBNN - MLP has low >= -{FULL_MARGIN}; "
                   f"(b) GBNN at 25% of units - GBNN full has low >= -{PRUNE_MARGIN}; (c) GBNN at 25% - MLP at 25% "
                   f"has low > {GAP_MIN}"),
        passed=bool(full_ok and prune_ok and gap_ok),
        preconditions={"MLP learns": Check("MLP full test accuracy (mean)", float(mlp_a[:, 0].mean()), ">=", 0.9)},
        headline=(Check("full GBNN - MLP (CI low)", full_ci.low, ">=", -FULL_MARGIN),
                  Check("GBNN 25% - GBNN full (CI low)", prune_ci.low, ">=", -PRUNE_MARGIN),
                  Check("GBNN 25% - MLP 25% (CI low)", gap_ci.low, ">", GAP_MIN)),
        figures={"pruning_curve": fig},
        notes=(f"Full GBNN - MLP {fmt(full_ci)}; GBNN 25% - full {fmt(prune_ci)}; GBNN - MLP at 25% {fmt(gap_ci)}. "
               "Mean accuracy by kept fraction " + str(list(KEEP_FRACTIONS)) + ": GBNN "
               + ", ".join(f"{a:.3f}" for a in gb_a.mean(0)) + "; MLP " + ", ".join(f"{a:.3f}" for a in mlp_a.mean(0))
               + ". GBNN's multiclass F_0 is the best constant (log class priors), not the official zeros; its "
               "Newton step is one scalar per round. The MLP is pruned by keeping its first-indexed units (its "
               "units have no training order)."),
    )
