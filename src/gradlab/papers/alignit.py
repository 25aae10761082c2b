"""AlignIT: Enhancing Prompt Alignment in Customization of Text-to-Image Models (arXiv 2406.18893).

Two claims on the shared tiny text-to-image model (:func:`gradlab.generative.tiny.load_tiny_t2i`, pixel space,
16x16 coloured shapes, 4 cross-attention layers):

* ``kv_exactness``: the mechanism. A customisation that changes everything AlignIT is meant to undo (a new token
  ``<v*>``, every text-encoder weight as in DreamBooth, every ``attn2.to_k/to_v`` as in Custom Diffusion); DDIM
  sampling with classifier-free guidance under :func:`~gradlab.generative.alignit.install_alignit`; in every
  cross-attention layer and every step the recorded keys and values are compared bit for bit (``torch.equal``)
  with the plain models' own projections: non-concept positions with the base model's, concept positions with the
  customised model's on the dummy prompt, the unconditional half with the customised model's.
* ``prompt_alignment``: the effect. Custom-Diffusion-style customisation (token row + all ``attn2.to_k/to_v``) on
  a colour held out of the model's training (``purple``), shown on circles only ("a <v*> circle"); then
  "a <v*> square" is sampled from the same noise with the customised model with and without AlignIT, and the shape
  judge (:func:`gradlab.generative.judge.load_shape_judge`, never a training signal) reads shape and colour.

Assumptions where the paper's full text was unavailable (research notes §2): dummy template ``"a {}"``; the base
encoder sees ``"photo"`` (the token the concept was initialised from, so this is the base model with the token
before customisation) at the concept position; only the concept's own positions are infused; the unconditional
branch is untouched.
"""

from __future__ import annotations

import copy
import textwrap
import time

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, claim, paired_bootstrap_ci
from gradlab.papers._generative_setups import shape_judge, tiny_t2i

PAPER = Paper(
    key="alignit",
    title="AlignIT: Enhancing Prompt Alignment in Customization of Text-to-Image Models",
    short_title="AlignIT",
    cluster="generative",
    arxiv="2406.18893",
    components=("gradlab.generative.alignit", "gradlab.generative._attention"),
    statement=("Customisation moves the keys and values of every prompt token; infusing only the concept's keys and "
               "values (from the customised model on a dummy prompt) into the base model's keys and values of the "
               "other tokens, in every cross-attention layer, restores alignment with the rest of the prompt while "
               "keeping the concept."),
)

CONCEPT = "<v*>"
INIT_WORD = "photo"
DUMMY = "a {}"
GUIDANCE = 4.0
COLOUR_DROP_MAX = 0.1


def _word_id(tok, word: str) -> int:
    """The id of a single-token word as the tokenizer encodes it in text (CLIP's BPE appends ``</w>``)."""
    ids = tok(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not a single token of the tiny tokenizer")
    return int(ids[0])


def _customisable(model):
    """(tokenizer with <v*>, custom text encoder with a row for it initialised from INIT_WORD)."""
    tok = copy.deepcopy(model.tokenizer)
    tok.add_tokens([CONCEPT])
    te = copy.deepcopy(model.text_encoder)
    te.resize_token_embeddings(len(tok))
    emb = te.get_input_embeddings().weight
    with torch.no_grad():
        emb[_word_id(tok, CONCEPT)] = emb[_word_id(tok, INIT_WORD)]
    return tok, te


def _attn2_names(unet) -> list[str]:
    from gradlab.generative._attention import cross_attention_names

    return cross_attention_names(unet)


# ---------------------------------------------------------------------------------------------------- exactness
def _projections(unet, names, states):
    """Each layer's own attn2.to_k/to_v outputs for ``states``, recorded with forward hooks on a plain UNet call."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
    rec, hooks = {}, []
    for n in names:
        mod = unet.get_submodule(n)
        hooks.append(mod.to_k.register_forward_hook(lambda m, i, o, n=n: rec.setdefault((n, "k"), o.detach().clone())))
        hooks.append(mod.to_v.register_forward_hook(lambda m, i, o, n=n: rec.setdefault((n, "v"), o.detach().clone())))
    try:
        with torch.no_grad():
            unet(torch.zeros(states.shape[0], *_sample_shape(unet)), 0, encoder_hidden_states=states)
    finally:
        for h in hooks:
            h.remove()
    return rec


def _sample_shape(unet):
    s = unet.config.sample_size
    return (unet.config.in_channels, s, s)


@claim(paper=PAPER.key, title="In every cross-attention layer and DDIM step, AlignIT's non-concept keys/values are "
       "bit-identical to the base model's and the concept's to the customised model's (dummy prompt)",
       timeouts={"smoke": 300, "quick": 1800}, needs=(tiny_t2i,))
def kv_exactness(run: ClaimRun) -> Evidence:
    from gradlab.generative.alignit import AlignITController, install_alignit
    from gradlab.generative.model import T2IModel
    from gradlab.generative.tiny import load_tiny_t2i

    steps = run.pick(smoke=3, quick=20, full=50)
    model = load_tiny_t2i(run.pick(smoke="smoke", quick="quick"))
    run.progress(0.1, "model loaded")
    tok, cte = _customisable(model)
    cunet = copy.deepcopy(model.unet)
    g = torch.Generator().manual_seed(run.seed)
    with torch.no_grad():  # a customisation that touches every text-encoder weight and every attn2 K/V projection
        for p in cte.parameters():
            p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
        for n in _attn2_names(cunet):
            for lin in (cunet.get_submodule(n).to_k, cunet.get_submodule(n).to_v):
                lin.weight.mul_(1 + 0.3 * torch.randn(lin.weight.shape, generator=g))
    prompts = ["a <v*> square", "a <v*> triangle", "a blue <v*> circle", "<v*> square"]
    ctrl = AlignITController(model.text_encoder, cte, tok, [CONCEPT], DUMMY, base_placeholder=INIT_WORD)
    names = _attn2_names(cunet)
    ids = ctrl.tokenize(prompts)
    mask = ctrl.concept_mask(ids)
    with torch.no_grad():
        base_states = model.text_encoder(input_ids=torch.where(mask, _word_id(tok, INIT_WORD), ids)).last_hidden_state
        dummy_ids = ctrl.tokenize([ctrl.dummy_prompt])
        dummy_states = cte(input_ids=dummy_ids).last_hidden_state
        uncond = cte(input_ids=ctrl.tokenize([""] * len(prompts))).last_hidden_state
        custom_states = cte(input_ids=ids).last_hidden_state
    ref_base = _projections(model.unet, names, base_states)
    ref_dummy = _projections(cunet, names, dummy_states)
    ref_uncond = _projections(cunet, names, uncond)
    ref_custom = _projections(cunet, names, custom_states)  # plain customised model on the full prompt
    dpos = torch.tensor([int((dummy_ids[0] == i).nonzero()[0]) for i in ids[mask].tolist()])
    run.progress(0.3, "references recorded")

    cond = ctrl.encode(prompts)
    ctrl.record = True
    cmodel = T2IModel(tok, cte, cunet, model.scheduler)
    latents = torch.randn((len(prompts), *model.sample_shape), generator=torch.Generator().manual_seed(run.seed + 1))
    t0 = time.perf_counter()
    with install_alignit(cunet, ctrl, base_unet=model.unet):
        images = cmodel.sample(cond, num_steps=steps, guidance_scale=GUIDANCE, negative_embeds=uncond, latents=latents)
    sample_s = time.perf_counter() - t0
    run.progress(0.8, "sampled")

    b = len(prompts)
    counts = {k: 0 for k in ("non_concept", "concept", "uncond")}
    mismatches = {k: 0 for k in counts}
    max_diff = {k: 0.0 for k in counts}
    calls_per_layer = []
    for n in names:
        log = ctrl.kv_log.get(n, [])
        calls_per_layer.append(len(log))
        for key, value in log:
            for got, kind in ((key, "k"), (value, "v")):
                parts = {"uncond": (got[:b], ref_uncond[(n, kind)]),
                         "non_concept": (got[b:][~mask], ref_base[(n, kind)][~mask]),
                         "concept": (got[b:][mask], ref_dummy[(n, kind)][0, dpos])}
                for part, (x, y) in parts.items():
                    counts[part] += 1
                    same = x.shape == y.shape and torch.equal(x, y)
                    mismatches[part] += int(not same)
                    if x.shape == y.shape:
                        max_diff[part] = max(max_diff[part], float((x - y).abs().max()))
    total_mismatch = sum(mismatches.values())
    all_layers_steps = calls_per_layer == [steps] * len(names)
    # what AlignIT removes must exist: the plain customised model's non-concept K/V differ from the base model's
    drift = max(float((ref_custom[(n, "k")][~mask] - ref_base[(n, "k")][~mask]).abs().max()) for n in names)
    concept_change = min(float((ref_dummy[(n, "k")][0, dpos] - ref_base[(n, "k")][mask]).abs().max()) for n in names)

    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    p0 = 0
    n_tok = min(ids.shape[1], int((ids[p0] != tok.pad_token_id).sum()) + 1)
    rows_plain = np.stack([(ref_custom[(n, "k")][p0] - ref_base[(n, "k")][p0]).norm(dim=-1).numpy() for n in names])
    rows_align = np.stack([(ctrl.kv_log[n][-1][0][b + p0] - ref_base[(n, "k")][p0]).norm(dim=-1).numpy()
                           for n in names])
    vmax = float(max(rows_plain.max(), rows_align.max()))
    labels = tok.convert_ids_to_tokens(ids[p0].tolist())[:n_tok]
    for ax, rows, title in ((axes[0], rows_plain, "customised model"), (axes[1], rows_align, "customised + AlignIT")):
        im = ax.imshow(rows[:, :n_tok], cmap="magma", vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(n_tok), [s.replace("</w>", "") for s in labels], rotation=45, fontsize=8)
        ax.set_title(f"{title}\n||K - K_base|| per token of '{prompts[p0]}' (last step)", fontsize=9)
    short = [n.split(".transformer_blocks")[0].replace("_blocks", "").replace(".attentions", " attn ") for n in names]
    axes[0].set_yticks(range(len(names)), short, fontsize=8)
    axes[0].set_ylabel("cross-attention layer (execution order)", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8)

    metrics = {"steps": steps, "layers": len(names), "prompts": prompts, "checks": counts,
               "mismatches": mismatches, "max_abs_diff": max_diff, "calls_per_layer": calls_per_layer,
               "customised_non_concept_key_drift": drift, "concept_key_change_min": concept_change,
               "sampling_seconds": sample_s, "images_finite": bool(torch.isfinite(images).all())}
    return Evidence(
        metrics=metrics,
        criterion=("in every cross-attention layer and every one of the DDIM steps (each layer called once per step), "
                   "torch.equal holds for: non-concept keys/values of the conditional half vs the base model's own "
                   "to_k/to_v of the base encoder's states; concept keys/values vs the customised model's to_k/to_v of "
                   "the customised encoder's dummy-prompt states; the unconditional half vs the customised model's; "
                   "0 mismatches"),
        passed=bool(total_mismatch == 0 and all_layers_steps),
        preconditions={"the customisation moves non-concept K (what AlignIT undoes)": Check(
                           "max |K_custom - K_base| at non-concept positions", drift, ">", 1e-3),
                       "the customisation changes the concept's K": Check(
                           "min over layers of max |K_concept - K_base(placeholder)|", concept_change, ">", 1e-3),
                       "every layer was exercised at every step": all_layers_steps},
        headline=(Check("mismatching (layer, step, part) tensors", total_mismatch, "<=", 0),
                  Check("max |AlignIT K/V - reference| over all parts", max(max_diff.values()), "<=", 0.0)),
        figures={"key_deviation_per_token": fig},
        notes=(f"{len(names)} layers x {steps} steps x (K, V) x 3 parts = {sum(counts.values())} tensor comparisons; "
               f"mismatches {mismatches}. The plain customised model's non-concept keys differ from the base model's "
               f"by up to {drift:.3g}; AlignIT's by exactly 0."),
    )


# ---------------------------------------------------------------------------------------------------- alignment
def customise(model, tok, te, unet, *, colour: str, shape: str, steps: int, batch: int, seed: int,
              lr_token: float = 5e-3, lr_kv: float = 1e-3) -> list[float]:
    """Custom Diffusion on the tiny model (in place): the ``<v*>`` embedding row and every ``attn2.to_k/to_v``,
    DDPM loss on images of ``colour`` ``shape`` captioned ``"a <v*> {shape}"``; returns the losses."""
    from gradlab.generative.tiny import make_shapes

    cid = _word_id(tok, CONCEPT)
    emb = te.get_input_embeddings()
    te.requires_grad_(False)
    emb.weight.requires_grad_(True)
    unet.requires_grad_(False)
    kv = []
    for n in _attn2_names(unet):
        for lin in (unet.get_submodule(n).to_k, unet.get_submodule(n).to_v):
            lin.requires_grad_(True)
            kv += list(lin.parameters())
    opt = torch.optim.AdamW([{"params": [emb.weight], "lr": lr_token, "weight_decay": 0.0},
                             {"params": kv, "lr": lr_kv, "weight_decay": 1e-2}], foreach=True)
    keep = torch.zeros(emb.weight.shape[0], 1)
    keep[cid] = 1.0
    g = torch.Generator().manual_seed(seed)
    sched = model.scheduler
    ids = tok([f"a {CONCEPT} {shape}"] * batch, padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    losses = []
    unet.train()
    for step in range(steps):
        data = make_shapes(batch, seed=seed * 7919 + step, colours=(colour,), shapes=(shape,))
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        noise = torch.randn(data.images.shape, generator=g)
        x_t = sched.add_noise(data.images, noise, t)
        loss = F.mse_loss(unet(x_t, t, encoder_hidden_states=te(input_ids=ids).last_hidden_state).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        emb.weight.grad.mul_(keep)  # only the concept's row learns
        opt.step()
        losses.append(float(loss.detach()))
    unet.eval().requires_grad_(False)
    te.requires_grad_(False)
    return losses


@claim(paper=PAPER.key, title="After customising on a held-out colour shown on circles only, AlignIT raises the "
       "judge's square accuracy for 'a <v*> square' and keeps the concept colour (at most 0.1 lower)",
       timeouts={"smoke": 300, "quick": 1800}, needs=(tiny_t2i, shape_judge))
def prompt_alignment(run: ClaimRun) -> Evidence:
    from gradlab.generative.alignit import AlignITController, install_alignit
    from gradlab.generative.judge import load_shape_judge
    from gradlab.generative.model import T2IModel
    from gradlab.generative.tiny import HELD_OUT_COLOURS, load_tiny_t2i

    scale = run.pick(smoke="smoke", quick="quick")
    steps = run.pick(smoke=5, quick=150, full=400)
    n_img = run.pick(smoke=8, quick=48, full=128)
    sample_steps = run.pick(smoke=4, quick=20, full=50)
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    colour, train_shape, test_shape = HELD_OUT_COLOURS[0], "circle", "square"
    model = load_tiny_t2i(scale)
    judge = load_shape_judge(scale)
    run.progress(0.05, "model and judge loaded")
    test_prompt, train_prompt = f"a {CONCEPT} {test_shape}", f"a {CONCEPT} {train_shape}"

    def read(images):
        colours, shapes = judge.predict(images)
        return (np.array([s == test_shape for s in shapes], float), np.array([c == colour for c in colours], float),
                shapes)

    per_seed = {k: [] for k in ("sq_custom", "sq_align", "col_custom", "col_align", "col_concept", "sq_base")}
    losses_first_last, train_s = [], 0.0
    for i, seed in enumerate(seeds):
        tok, cte = _customisable(model)
        cunet = copy.deepcopy(model.unet)
        t0 = time.perf_counter()
        losses = customise(model, tok, cte, cunet, colour=colour, shape=train_shape, steps=steps, batch=16, seed=seed)
        train_s += time.perf_counter() - t0
        losses_first_last.append([float(np.mean(losses[:5])), float(np.mean(losses[-5:]))])
        cmodel = T2IModel(tok, cte, cunet, model.scheduler)
        latents = torch.randn((n_img, *model.sample_shape), generator=torch.Generator().manual_seed(seed + 17))

        def sample(m, cond, uncond):
            return m.sample(cond, num_steps=sample_steps, guidance_scale=GUIDANCE, negative_embeds=uncond,
                            latents=latents)

        with torch.no_grad():
            c_uncond = cmodel.null_embedding(n_img)
            img_custom = sample(cmodel, cmodel.encode_prompt([test_prompt] * n_img), c_uncond)
            img_concept = sample(cmodel, cmodel.encode_prompt([train_prompt] * n_img), c_uncond)
            img_base = sample(model, model.encode_prompt([f"a red {test_shape}"] * n_img), model.null_embedding(n_img))
            ctrl = AlignITController(model.text_encoder, cte, tok, [CONCEPT], DUMMY, base_placeholder=INIT_WORD)
            cond = ctrl.encode([test_prompt] * n_img)
            with install_alignit(cunet, ctrl, base_unet=model.unet):
                img_align = sample(cmodel, cond, c_uncond)
        sq_custom, col_custom, shapes_custom = read(img_custom)
        sq_align, col_align, shapes_align = read(img_align)
        _, col_concept, shapes_concept = read(img_concept)
        sq_base, _, _ = read(img_base)
        for k, v in (("sq_custom", sq_custom), ("sq_align", sq_align), ("col_custom", col_custom),
                     ("col_align", col_align), ("col_concept", col_concept), ("sq_base", sq_base)):
            per_seed[k].append(float(v.mean()))
        if i == 0:
            shown = (img_concept, shapes_concept, img_custom, shapes_custom, img_align, shapes_align)
        run.progress(0.05 + 0.9 * (i + 1) / len(seeds), f"seed {seed} done")

    mean = {k: float(np.mean(v)) for k, v in per_seed.items()}
    ci = paired_bootstrap_ci(per_seed["sq_align"], per_seed["sq_custom"], seed=run.seed)
    colour_drop = mean["col_custom"] - mean["col_align"]
    passed = bool(ci.low > 0 and colour_drop <= COLOUR_DROP_MAX)
    img_concept, shapes_concept, img_custom, shapes_custom, img_align, shapes_align = shown
    fig = Figure(figsize=(10, 4.8))
    rows = (("customised, 'a <v*> circle' (training prompt)", img_concept, shapes_concept),
            ("customised, 'a <v*> square'", img_custom, shapes_custom),
            ("customised + AlignIT, 'a <v*> square'", img_align, shapes_align))
    k = min(10, n_img)
    axes = fig.subplots(3, k, squeeze=False)
    for r, (title, imgs, shp) in enumerate(rows):
        for j in range(k):
            ax = axes[r][j]
            ax.imshow(((imgs[j].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(shp[j], fontsize=7, pad=2)
        axes[r][0].set_ylabel(textwrap.fill(title, 16), fontsize=7)
    fig.suptitle(f"first seed, same noise per column; judge's shape above each image. Mean over {len(seeds)} seeds: "
                 f"square accuracy customised {mean['sq_custom']:.2f}, AlignIT {mean['sq_align']:.2f}; {colour} rate "
                 f"{mean['col_custom']:.2f} vs {mean['col_align']:.2f}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))

    metrics = {"customisation_steps": steps, "images_per_seed": n_img, "seeds": list(seeds),
               "sampling_steps": sample_steps, "guidance": GUIDANCE, "concept_colour": colour,
               "train_shape": train_shape, "test_shape": test_shape,
               "customisation_loss_first_last": losses_first_last, "customisation_seconds": train_s,
               "per_seed": per_seed, "square_acc_customised": mean["sq_custom"], "square_acc_alignit": mean["sq_align"],
               "square_acc_gain": ci.to_json(), "colour_rate_customised": mean["col_custom"],
               "colour_rate_alignit": mean["col_align"], "colour_drop": colour_drop,
               "concept_colour_rate_training_prompt": mean["col_concept"],
               "base_square_acc_red_square": mean["sq_base"]}
    return Evidence(
        metrics=metrics,
        criterion=(f"over {len(seeds)} customisation seeds ({n_img} samples of 'a <v*> {test_shape}' each, AlignIT "
                   f"and the customised model from the same noise), the 95% bootstrap CI over seeds of the per-seed "
                   f"judge square-accuracy gain AlignIT minus customised has low > 0, and the mean judged {colour} "
                   f"rate with AlignIT is at most {COLOUR_DROP_MAX} below the customised model's"),
        passed=passed,
        preconditions={"the customisation learned the concept colour": Check(
                           f"{colour} rate, customised 'a <v*> {train_shape}'", mean["col_concept"], ">=", 0.5),
                       "the base model draws the test shape": Check(
                           f"square accuracy, base 'a red {test_shape}'", mean["sq_base"], ">=", 0.5),
                       "the customised model is misaligned (room to improve)": Check(
                           "square accuracy, customised 'a <v*> square'", mean["sq_custom"], "<=", 0.9)},
        headline=(Check("square accuracy gain AlignIT - customised (CI low over seeds)", ci.low, ">", 0.0),
                  Check(f"{colour} rate drop customised - AlignIT", colour_drop, "<=", COLOUR_DROP_MAX)),
        figures={"samples": fig},
        notes=(f"square accuracy customised {mean['sq_custom']:.3f} -> AlignIT {mean['sq_align']:.3f} (gain "
               f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}] over seeds); {colour} rate {mean['col_custom']:.3f} -> "
               f"{mean['col_align']:.3f}. Customisation: {steps} AdamW steps per seed, batch 16, token row lr 5e-3 + "
               f"attn2 K/V lr 1e-3 ({train_s:.0f} s in all). Dummy template {DUMMY!r}, base placeholder "
               f"{INIT_WORD!r}, guidance {GUIDANCE}, {sample_steps} DDIM steps."),
    )
