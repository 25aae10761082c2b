"""YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information (arXiv 2402.13616).

The paper's central statement: PGI — a reversible auxiliary branch (CBLinear/CBFuse links into a second backbone
with its own head) trained alongside a GELAN detector — supplies reliable gradients to the backbone during
training, is removed at inference (the deployed graph is unchanged), and improves accuracy over training the same
detector without it. CPU stand-ins for the COCO runs (research notes §5d): GELAN-t at width 0.5 / depth 1/3
(0.47M parameters) on 64 px synthetic rectangle scenes (2 classes), recipe in ``_yolov9_training``.

* ``pgi_mechanics``: the auxiliary loss changes main-backbone gradients while neck and head get exactly zero; the
  stripped detector is a state-dict subset with bit-identical outputs and no auxiliary module runs in eval
  (GELAN-t and GELAN-C).
* ``detects``: the stripped PGI GELAN-t reaches held-out mAP50 >= 0.5.
* ``pgi_gain``: PGI beats the plain GELAN in mAP50-95: the paired 95% bootstrap CI over 3 seeds (quick) lies above
  0; inconclusive while the CI holds both 0 and the paper's smallest PGI gain. The research notes expect this not to
  reproduce at this scale (a 0.47M model on easy synthetic scenes does not suffer the information bottleneck PGI
  addresses); the verdict is reported as measured.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import gradlab.detection as det
from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, claim, paired_bootstrap_ci, resolution_check
from gradlab.papers import _yolov9_training as yt

PAPER = Paper(
    key="yolov9",
    title="YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information",
    short_title="YOLOv9 (PGI, GELAN)",
    cluster="generative",
    arxiv="2402.13616",
    components=("gradlab.detection", "gradlab.papers._yolov9_training"),
    statement=("Programmable Gradient Information — a reversible auxiliary branch attached to a GELAN detector through "
               "CBLinear/CBFuse, trained with its own head and removed at inference — gives the backbone reliable "
               "gradients without changing the inference graph, and improves detection accuracy over the same "
               "detector trained without it."),
    revisions=(
        Revision(
            claim="pgi_gain",
            date="2026-12-02",
            old="min over 2 seeds of mAP50-95(PGI) - mAP50-95(plain) > 0, else failed",
            new=("3 seeds at quick (5 at full); passed iff the paired 95% bootstrap CI of the mean difference has its "
                 "lower end > 0; failed iff it lies below the paper's smallest reported PGI gain (0.001 = +0.1 AP); "
                 "inconclusive (precondition 'the seeds resolve the paper's gain') when it holds both"),
            reason=("Statistical flaw: the verdict was a margin on two draws. Two runs of unchanged code with the same "
                    "seeds on two machines gave opposite verdicts, because training outcomes differ with the CPU's "
                    "arithmetic: passed (+0.0053 worst seed) in the run of 2026-12-02 14:54, failed in the run of "
                    "21:10 (seed 0 +0.0088, seed 1009 -0.2169: that PGI run settled at 0.59 vs plain 0.81). Two "
                    "seeds cannot tell an absent gain from the paper's, so a CI straddling both is inconclusive, "
                    "not failed; the pass condition is unchanged in kind (a credible gain) and was not relaxed."),
            old_result=("failed: min over seeds [0, 1009] of PGI - plain = -0.2169 (AMD EPYC, 1 thread); on the same "
                        "machine seeds 2018 and 3027 (measured for this change) gave -0.0023 and -0.0056"),
        ),
    ),
)

MAP50_MIN = 0.5
PGI_SMALLEST_GAIN = 0.001
"""The smallest COCO gain of PGI the paper reports (AP50:95 as a fraction): see the criterion history."""
N_BOOT = 200


def _bootstrap_map50(preds: list, targets: list, nc: int, seed: int, n: int = N_BOOT) -> tuple[float, float]:
    """2.5 % and 97.5 % percentiles of held-out mAP50 over images resampled with replacement."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(preds), len(preds))
        vals.append(det.detection_ap([preds[i] for i in idx], [targets[i] for i in idx], num_classes=nc,
                                     iou_thresholds=[0.5])["map50"])
    v = np.asarray(vals)
    v = v[np.isfinite(v)]
    return float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))


def _draw_detections(images: torch.Tensor, preds: list, targets: list, title: str, n: int = 8,
                     min_score: float = 0.3) -> Figure:
    fig = Figure(figsize=(2.2 * n / 2, 4.8))
    axes = fig.subplots(2, n // 2)
    names = ("red", "blue")
    for ax, img, p, t in zip(axes.flat, images[:n], preds[:n], targets[:n]):
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        for b in t["boxes"].tolist():
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, ec="white",
                                   lw=1.0, ls="--"))
        keep = p["scores"] >= min_score
        for b, s, lab in zip(p["boxes"][keep].tolist(), p["scores"][keep].tolist(), p["labels"][keep].tolist()):
            col = "yellow" if lab == 0 else "cyan"
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, ec=col, lw=1.4))
            ax.text(b[0], b[1] - 1, f"{names[lab] if lab < 2 else lab} {s:.2f}", color=col, fontsize=6, va="bottom")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title + f"\nwhite dashed: ground truth; yellow = red class, cyan = blue class (score >= {min_score})",
                 fontsize=8)
    fig.tight_layout()
    return fig


def _curves_figure(curves: dict[str, dict], title: str) -> Figure:
    fig = Figure(figsize=(11, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    styles = {"pgi": "tab:red", "plain": "tab:blue"}
    seed_names = list(dict.fromkeys(name.split()[-1] for name in curves))
    for name, c in curves.items():
        col = styles[name.split()[0]]
        ls = ("-", "--", ":")[seed_names.index(name.split()[-1]) % 3]
        k = max(1, len(c["main_loss"]) // 50)
        ml = np.convolve(c["main_loss"], np.ones(k) / k, mode="valid")
        ax1.plot(np.arange(len(ml)) + k, ml, color=col, ls=ls, label=name)
        ax2.plot(c["eval_step"], c["map50"], color=col, ls=ls, marker="o", ms=3, label=f"{name} mAP50")
        ax2.plot(c["eval_step"], c["map50_95"], color=col, ls=ls, marker="s", ms=3, alpha=0.6, label=f"{name} mAP50-95")
    ax1.set(xlabel="step", ylabel="main-head loss (7.5 box + 0.5 cls + 1.5 dfl), running mean", title="training loss")
    ax1.set_yscale("log")
    ax2.axhline(MAP50_MIN, color="gray", lw=0.8, ls=":")
    ax2.set(xlabel="step", ylabel="held-out mAP", ylim=(0, 1), title="held-out mAP during training")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _aux_gradients(model: det.YOLOv9PGI, x: torch.Tensor, targets: list) -> dict:
    """Per main layer max |d(0.25 L_aux)/d theta|, and the main-only vs total gradient difference."""
    model.train()
    aux, main = model(x)
    l_main, _ = det.DetectionLoss(model.head)(main, targets)
    l_aux, _ = det.DetectionLoss(model.aux_head)(aux, targets)
    names = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("model.")]
    params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("model.")]
    g_aux = torch.autograd.grad(0.25 * l_aux, params, allow_unused=True, retain_graph=True)
    g_main = torch.autograd.grad(l_main, params, allow_unused=True, retain_graph=True)
    g_tot = torch.autograd.grad(l_main + 0.25 * l_aux, params, allow_unused=True)
    n_layers = len(model.model)
    per_layer = np.zeros(n_layers)
    diff_backbone = diff_neck_head = 0.0
    for n, ga, gm, gt in zip(names, g_aux, g_main, g_tot):
        i = int(n.split(".")[1])
        per_layer[i] = max(per_layer[i], 0.0 if ga is None else float(ga.abs().max()))
        d = float((gt - (gm if gm is not None else torch.zeros_like(gt))).abs().max()) if gt is not None else 0.0
        if i < model.spec.backbone:
            diff_backbone = max(diff_backbone, d)
        else:
            diff_neck_head = max(diff_neck_head, d)
    return {"per_layer": per_layer.tolist(), "backbone_aux_max": float(per_layer[:model.spec.backbone].max()),
            "neck_head_aux_max": float(per_layer[model.spec.backbone:].max()),
            "total_minus_main_backbone": diff_backbone, "total_minus_main_neck_head": diff_neck_head}


def _strip_check(model: det.YOLOv9PGI, x: torch.Tensor) -> dict:
    model.eval()
    calls: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: calls.append(n)) for n, m in model.aux.named_modules()]
    stripped = model.strip_auxiliary().eval()
    with torch.no_grad():
        out_pgi = model(x)
        out_det = stripped(x)
    for h in handles:
        h.remove()
    full, sub = model.state_dict(), stripped.state_dict()
    return {
        "bit_identical": all(torch.equal(a, b) for a, b in zip(out_pgi, out_det)),
        "state_dict_subset": set(sub) <= set(full) and all(torch.equal(sub[k], full[k]) for k in sub),
        "aux_module_calls_in_eval": len(calls),
        "aux_modules_in_stripped": sum(isinstance(m, (det.CBLinear, det.CBFuse)) for m in stripped.modules()),
        "params_train": sum(p.numel() for p in model.parameters()),
        "params_deployed": sum(p.numel() for p in stripped.parameters()),
    }


@claim(paper=PAPER.key, title="PGI's auxiliary loss changes main-backbone gradients, neck and head get exactly 0; the "
       "stripped detector is a state-dict subset with bit-identical outputs and no auxiliary module runs in eval",
       timeouts={"smoke": 120, "quick": 600})
def pgi_mechanics(run: ClaimRun) -> Evidence:
    r = yt.recipe_for(run.scale)
    x, t = det.make_rectangle_scenes(run.pick(smoke=4, quick=8), r["val_seed"], size=64, num_classes=2)
    variants = {"gelan-t": lambda: det.YOLOv9PGI(det.gelan_spec_t(), nc=2, width=r["width"], depth=r["depth"])}
    if run.scale != "smoke":
        variants["gelan-c"] = lambda: det.YOLOv9PGI(det.gelan_spec_c(), nc=2)
    metrics: dict = {}
    results = {}
    for k, (name, make) in enumerate(variants.items()):
        torch.manual_seed(run.seed)
        model = make()
        # a few optimiser steps so BatchNorm statistics and weights are off their initial values
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
        lossf = det.DualDetectionLoss(model.head, model.aux_head)
        for _ in range(run.pick(smoke=1, quick=3)):
            loss, _ = lossf(model.train()(x), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
        g = _aux_gradients(model, x, t)
        s = _strip_check(model, x)
        results[name] = (g, s, model.spec.backbone)
        for key, v in {**g, **s}.items():
            if key != "per_layer":
                metrics[f"{name}_{key}"] = v
        metrics[f"{name}_aux_grad_per_layer"] = g["per_layer"]
        run.progress((k + 1) / len(variants), name)
    ok = all(g["backbone_aux_max"] > 0 and g["neck_head_aux_max"] == 0.0 and g["total_minus_main_neck_head"] == 0.0
             and s["bit_identical"] and s["state_dict_subset"] and s["aux_module_calls_in_eval"] == 0
             and s["aux_modules_in_stripped"] == 0 for g, s, _ in results.values())

    fig = Figure(figsize=(11, 3.6 * len(results)))
    axes = np.atleast_1d(fig.subplots(len(results), 1))
    for ax, (name, (g, s, nb)) in zip(axes, results.items()):
        pl = np.asarray(g["per_layer"])
        cols = ["tab:red" if i < nb else "tab:blue" for i in range(len(pl))]
        ax.bar(np.arange(len(pl)), np.where(pl > 0, pl, 1e-12), color=cols)
        ax.set_yscale("log")
        ax.set_ylim(1e-13, max(pl.max() * 5, 1e-6))
        for i, v in enumerate(pl):
            if v == 0:
                ax.text(i, 3e-12, "0", ha="center", fontsize=7, color="tab:blue")
        ax.axvline(nb - 0.5, color="k", lw=0.8, ls=":")
        ax.set(xlabel="main-branch layer model.<i> (red: backbone, blue: neck and head)",
               ylabel="max |d(0.25 L_aux)/d theta|",
               title=f"{name} + PGI: auxiliary-loss gradient per main layer; stripped outputs bit-identical: "
                     f"{s['bit_identical']}; parameters {s['params_train'] / 1e6:.2f}M train -> "
                     f"{s['params_deployed'] / 1e6:.2f}M deployed")
        ax.set_xticks(np.arange(len(pl)))
    fig.tight_layout()
    first = next(iter(results))
    return Evidence(
        metrics=metrics,
        criterion=("for every model (GELAN-t 0.5x and GELAN-C at quick scale) with PGI: max |grad of 0.25 L_aux| over "
                   "main-backbone parameters > 0, over main neck and head parameters == 0 exactly (and "
                   "grad(L_main + 0.25 L_aux) - grad(L_main) == 0 exactly there); in eval the stripped GELANDetector's "
                   "outputs torch.equal the PGI model's, its state dict is a subset with equal tensors, no auxiliary "
                   "module runs (forward hooks) and the stripped model holds no CBLinear/CBFuse"),
        passed=bool(ok),
        headline=(Check(f"{first}: max |aux grad| on neck+head", results[first][0]["neck_head_aux_max"], "<=", 0.0),
                  Check(f"{first}: max |aux grad| on backbone", results[first][0]["backbone_aux_max"], ">", 0.0),
                  Check(f"{first}: auxiliary modules run in eval", results[first][1]["aux_module_calls_in_eval"], "<=", 0)),
        preconditions={"aux loss is non-zero": Check("backbone aux gradient", results[first][0]["backbone_aux_max"],
                                                     ">", 0.0)},
        figures={"aux_gradient_per_layer": fig},
        notes=("Gradients from one forward pass in training mode (batch statistics) on 64 px scenes after a few AdamW "
               "steps. The auxiliary branch reaches the main branch only through CBLinear on the backbone levels "
               "P3/P4/P5, so its gradient stops at the backbone; the neck and head are trained by the main loss alone."),
    )


def _trained_pair(run: ClaimRun, seeds: tuple[int, ...], kinds: tuple[str, ...]) -> tuple[dict, dict, tuple]:
    r = yt.recipe_for(run.scale)
    data = yt.datasets(r)
    out: dict = {}
    # the first seed's models last: `detects` trains (PGI, first seed) too, and when both claims run at once the
    # other models are trained meanwhile instead of waiting on its cache lock (each model is seeded on its own)
    jobs = [(k, s) for s in (*seeds[1:], seeds[0]) for k in kinds]
    for j, (kind, s) in enumerate(jobs):
        res = yt.trained(kind, r, s, data, progress=lambda f, m, j=j: run.progress((j + f) / len(jobs), m))
        out[(kind, s)] = res
    return r, out, data


@claim(paper=PAPER.key, title="The stripped PGI GELAN-t (0.47M parameters) detects: held-out mAP50 >= 0.5 on "
       "synthetic rectangle scenes (lower end of the 95% image-bootstrap interval)",
       timeouts={"smoke": 120, "quick": 900})
def detects(run: ClaimRun) -> Evidence:
    seed = run.seed  # the shared training: pgi_gain's first seed is run.seeds(2)[0] == run.seed
    r, res, (_, _, xva, tva) = _trained_pair(run, (seed,), ("pgi",))
    tr = res[("pgi", seed)]
    ev = yt.evaluate(tr.model, xva, tva, r["nc"])
    low, high = _bootstrap_map50(ev["predictions"], tva, r["nc"], seed=run.seed, n=run.pick(smoke=20, quick=N_BOOT))
    n_params = sum(p.numel() for p in tr.model.parameters())
    metrics = {"map50": ev["map50"], "map50_95": ev["map50_95"], "map50_ci95": [low, high], "params_deployed": n_params,
               "train_steps": r["steps"], "train_seconds": tr.curve["train_seconds"], "from_cache": tr.cached,
               "n_val": r["n_val"], "n_train": r["n_train"], "curve_map50": tr.curve["map50"],
               "final_train_loss": tr.curve["main_loss"][-1]}
    finite = bool(np.isfinite(tr.curve["loss"]).all())
    return Evidence(
        metrics=metrics,
        criterion=(f"stripped PGI GELAN-t (width 0.5, depth 1/3) after {r['steps']} steps: the 2.5 % percentile of "
                   f"held-out mAP50 over {N_BOOT} image-bootstrap resamples of the {r['n_val']} held-out scenes "
                   f">= {MAP50_MIN} (conf 0.001, NMS IoU 0.7, COCO 101-point AP)"),
        passed=bool(low >= MAP50_MIN),
        headline=(Check("held-out mAP50 (bootstrap 2.5 %)", low, ">=", MAP50_MIN),
                  Check("held-out mAP50", ev["map50"], ">=", MAP50_MIN)),
        preconditions={"training stayed finite": finite},
        figures={"detections": _draw_detections(xva, ev["predictions"], tva,
                                                f"stripped PGI GELAN-t ({n_params / 1e6:.2f}M) on held-out scenes: "
                                                f"mAP50 {ev['map50']:.3f}, mAP50-95 {ev['map50_95']:.3f}"),
                 "training_curves": _curves_figure({f"pgi seed {seed}": tr.curve}, "PGI GELAN-t training")},
        notes=(f"Trained {r['steps']} steps of batch {r['batch']} on {r['n_train']} scenes in "
               f"{tr.curve['train_seconds']:.0f} s ({'loaded from cache' if tr.cached else 'trained in this run'}); "
               "the same training is pgi_gain's first PGI seed."),
    )


@claim(paper=PAPER.key, title="PGI improves accuracy: the paired 95% CI over 3 seeds of PGI - plain GELAN-t "
       "mAP50-95 lies above 0 (same initialisation and batches)", timeouts={"smoke": 180, "quick": 1500})
def pgi_gain(run: ClaimRun) -> Evidence:
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    r, res, (_, _, xva, tva) = _trained_pair(run, seeds, ("pgi", "plain"))
    metrics: dict = {"seeds": list(seeds), "train_steps": r["steps"]}
    diffs, curves = [], {}
    for s in seeds:
        evs = {k: yt.evaluate(res[(k, s)].model, xva, tva, r["nc"]) for k in ("pgi", "plain")}
        for k in ("pgi", "plain"):
            per_class = det.detection_ap(evs[k]["predictions"], tva, num_classes=r["nc"])["ap"]
            metrics[f"{k}_seed{s}_ap50_per_class"] = [row[0] for row in per_class]
            metrics[f"{k}_seed{s}_map50_95"] = evs[k]["map50_95"]
            metrics[f"{k}_seed{s}_map50"] = evs[k]["map50"]
            metrics[f"{k}_seed{s}_train_seconds"] = res[(k, s)].curve["train_seconds"]
            metrics[f"{k}_seed{s}_from_cache"] = res[(k, s)].cached
            curves[f"{k} seed {s}"] = res[(k, s)].curve
        diffs.append(evs["pgi"]["map50_95"] - evs["plain"]["map50_95"])
    metrics["pgi_minus_plain_map50_95"] = diffs
    ci = paired_bootstrap_ci([metrics[f"pgi_seed{s}_map50_95"] for s in seeds],
                             [metrics[f"plain_seed{s}_map50_95"] for s in seeds], seed=run.seed)
    metrics["pgi_minus_plain_ci"] = ci.to_json()
    metrics["paper_smallest_gain"] = PGI_SMALLEST_GAIN
    plain_ok = min(metrics[f"plain_seed{s}_map50"] for s in seeds)

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    w = 0.35
    for i, k in enumerate(("plain", "pgi")):
        vals = [metrics[f"{k}_seed{s}_map50_95"] for s in seeds]
        ax.bar(np.arange(len(seeds)) + (i - 0.5) * w, vals, w, label=k, color="tab:blue" if k == "plain" else "tab:red")
        for j, v in enumerate(vals):
            ax.text(j + (i - 0.5) * w, v + 0.005, f"{v:.3f}", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(seeds)), [f"seed {s}" for s in seeds])
    ax.set(ylabel="held-out mAP50-95", ylim=(0, 1),
           title=f"PGI vs plain GELAN-t, {r['steps']} steps; PGI - plain {ci.mean:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]")
    ax.title.set_fontsize(8)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return Evidence(
        metrics=metrics,
        criterion=(f"over seeds {list(seeds)} (same main-branch initialisation and batch order for both), the 95% "
                   "paired bootstrap CI of held-out mAP50-95(stripped PGI GELAN-t) - mAP50-95(plain GELAN-t trained "
                   "with L_main alone) has its lower end > 0; it fails when the CI's upper end is below the paper's "
                   f"smallest reported PGI gain ({PGI_SMALLEST_GAIN:g}) and is inconclusive when it holds both 0 and "
                   "that gain"),
        passed=bool(ci.above(0.0)),
        headline=(Check("PGI - plain mAP50-95 (CI low)", ci.low, ">", 0.0),
                  Check("PGI - plain mAP50-95 (mean)", ci.mean, ">", 0.0)),
        preconditions={"plain GELAN-t detects": Check("min plain mAP50 over seeds", plain_ok, ">=", MAP50_MIN),
                       "the seeds resolve the paper's gain": resolution_check(ci, PGI_SMALLEST_GAIN,
                                                                              what="PGI - plain mAP50-95")},
        figures={"map_by_seed": fig, "training_curves": _curves_figure(curves, "PGI (red) vs plain (blue) GELAN-t")},
        notes=("The research notes expected this not to reproduce at this scale (the paper's gain comes from deep "
               "models on COCO, where the information bottleneck is real). Differences PGI - plain per seed: "
               + ", ".join(f"{d:+.4f}" for d in diffs) + f"; mean {ci}. Per-class AP50 (red, blue): "
               + "; ".join(f"seed {s}: PGI {np.round(metrics[f'pgi_seed{s}_ap50_per_class'], 3).tolist()}, plain "
                           f"{np.round(metrics[f'plain_seed{s}_ap50_per_class'], 3).tolist()}" for s in seeds)
               + ". One training per seed and method: a PGI run that settles in a worse basin (as seed 1009 did on "
               "one machine: 0.59 vs 0.81) dominates a mean over few seeds, and training outcomes differ between "
               "CPUs (the environment is recorded with the result). Budget: with detects' training cached (PGI, "
               "first seed) this claim trains five models (~4.5 min on one thread, a documented exception to the "
               "3 min quick budget; alone it trains six)."),
    )
