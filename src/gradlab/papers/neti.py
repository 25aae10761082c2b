"""A Neural Space-Time Representation for Text-to-Image Personalization (arXiv 2305.15391).

Two claims:

* ``nested_dropout_ordering`` (no diffusion model): :class:`~gradlab.generative.neti.NeTIMapper` (D = 32,
  16 layers, output normed to 1, no bypass) is fitted to a fixed smooth synthetic target :math:`y(t, \\ell)` on the
  unit sphere (random two-layer network of low-frequency time features and a layer one-hot), once with nested
  dropout p = 0.5 and once with p = 0, same seed, steps and batches; the relative squared error over the full
  (t, ℓ) grid (t = 0, 10, ..., 990; all 16 layers) is measured at truncation k = 2, 4, ..., 128. Nested dropout
  should order the code by importance: error non-increasing in k, and far lower than p = 0 at small k.
* ``personalisation``: on the shared tiny text-to-image model, one concept (the held-out colour ``orange`` on
  triangles, prompt ``"a <c> triangle"``) is learned with equal steps, batches, noise and optimiser by (a) NeTI with
  the textual bypass, (b) the NeTI mapper alone, (c) single-vector Textual Inversion; the DDPM loss on held-out
  concept images (fixed timesteps and noise) should order them (a) < (b) < (c).
"""

from __future__ import annotations

import copy
import functools
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, bootstrap_ci, claim, paired_bootstrap_ci
from gradlab.papers._generative_setups import tiny_t2i

PAPER = Paper(
    key="neti",
    title="A Neural Space-Time Representation for Text-to-Image Personalization",
    short_title="NeTI",
    cluster="generative",
    arxiv="2305.15391",
    components=("gradlab.generative.neti", "gradlab.generative._attention"),
    statement=("A small mapper from (denoising timestep, UNet layer) to the concept's token embedding, with a textual "
               "bypass on the values and nested dropout, personalises a text-to-image model better than a single "
               "textual-inversion vector, and nested dropout orders its code so that truncation trades fidelity "
               "for editability."),
)

TRUNCATIONS = (2, 4, 8, 16, 32, 64, 128)
RATIO_K, RATIO_MAX = 16, 0.25


# -------------------------------------------------------------------------------------------- nested dropout
@functools.lru_cache(maxsize=4)
def _target_weights(num_layers: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    phase = 2 * math.pi * torch.rand(4, generator=g)
    w1 = torch.randn(64, 8 + num_layers, generator=g) / math.sqrt(8 + num_layers) * 2.0
    w2 = torch.randn(dim, 64, generator=g) / 8.0
    return phase, w1, w2


def synthetic_target(t: torch.Tensor, layers: torch.Tensor, *, num_layers: int = 16, dim: int = 32,
                     seed: int = 12345) -> torch.Tensor:
    """A fixed smooth map (t, ℓ) -> unit vectors in R^dim: a random tanh network of
    ``[sin, cos](2π f t / 1000 + φ)`` (f = 1..4) and the one-hot of ℓ."""
    phase, w1, w2 = _target_weights(num_layers, dim, seed)
    f = torch.arange(1, 5, dtype=torch.float32)
    arg = 2 * math.pi * f * t.float().unsqueeze(-1) / 1000 + phase
    feats = torch.cat([arg.sin(), arg.cos(), F.one_hot(layers.long(), num_layers).float()], -1)
    return F.normalize(torch.tanh(feats @ w1.T) @ w2.T, dim=-1)


def fit_mapper(p: float, *, seed: int, steps: int, batch: int = 64, lr: float = 1e-3):
    """Fit a NeTIMapper (nested dropout ``p``) to :func:`synthetic_target`; returns (mapper, losses)."""
    from gradlab.generative.neti import NeTIMapper

    mapper = NeTIMapper(32, 16, output_norm=1.0, use_bypass=False, nested_dropout_p=p, seed=seed).train()
    opt = torch.optim.Adam(mapper.parameters(), lr=lr, foreach=True)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)  # the nested-dropout draws
        for _ in range(steps):
            t = torch.randint(0, 1000, (batch,), generator=g)
            lyr = torch.randint(0, 16, (batch,), generator=g)
            loss = (mapper(t, lyr).embedding - synthetic_target(t, lyr)).pow(2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return mapper.eval(), losses


def truncation_errors(mapper) -> list[float]:
    """Relative squared error (targets have norm 1) over the (t, ℓ) grid at each k of :data:`TRUNCATIONS`."""
    t = torch.arange(0, 1000, 10).repeat_interleave(16)
    lyr = torch.arange(16).repeat(100)
    y = synthetic_target(t, lyr)
    with torch.no_grad():
        return [float((mapper(t, lyr, truncation_idx=k).embedding - y).pow(2).sum(-1).mean()) for k in TRUNCATIONS]


@claim(paper=PAPER.key, title="With nested dropout (p = 0.5) the mapper's error on a synthetic (t, layer) target is "
       "non-increasing in the truncation k and at k = 16 below 0.25x that of p = 0",
       timeouts={"smoke": 120, "quick": 900})
def nested_dropout_ordering(run: ClaimRun) -> Evidence:
    steps = run.pick(smoke=40, quick=1000, full=3000)
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    errs = {0.5: [], 0.0: []}
    final_loss = {0.5: [], 0.0: []}
    t0 = time.perf_counter()
    for i, s in enumerate(seeds):
        for p in (0.5, 0.0):
            mapper, losses = fit_mapper(p, seed=s, steps=steps)
            errs[p].append(truncation_errors(mapper))
            final_loss[p].append(float(np.mean(losses[-20:])))
            run.progress((2 * i + (p == 0.0) + 1) / (2 * len(seeds)), f"seed {s} p={p}")
    seconds = time.perf_counter() - t0
    e05, e0 = np.array(errs[0.5]), np.array(errs[0.0])
    mean05 = e05.mean(0)
    diffs = np.diff(mean05)
    monotone = bool((diffs <= 0).all())
    ki = TRUNCATIONS.index(RATIO_K)
    ratio = e05[:, ki] / e0[:, ki]
    ci = bootstrap_ci(ratio, seed=run.seed)
    passed = bool(monotone and ci.high < RATIO_MAX)

    fig = Figure(figsize=(6.8, 4.2))
    ax = fig.subplots()
    for arr, p, col in ((e05, 0.5, "tab:red"), (e0, 0.0, "tab:blue")):
        for row in arr:
            ax.plot(TRUNCATIONS, row, color=col, alpha=0.25, lw=1)
        ax.plot(TRUNCATIONS, arr.mean(0), color=col, marker="o", lw=2, label=f"nested dropout p = {p}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.axvline(RATIO_K, color="gray", ls=":", lw=1)
    ax.set(xlabel="truncation k (units of the 128-d code kept)", ylabel="relative squared error on the (t, l) grid",
           title=f"NeTI mapper on a synthetic target ({steps} steps, {len(seeds)} seeds: thin lines)")
    ax.legend()
    fig.tight_layout()

    metrics = {"steps": steps, "seeds": list(seeds), "truncations": list(TRUNCATIONS),
               "error_p05_mean": mean05.tolist(), "error_p0_mean": e0.mean(0).tolist(),
               "error_p05_per_seed": e05.tolist(), "error_p0_per_seed": e0.tolist(),
               "error_p05_successive_diffs": diffs.tolist(), f"ratio_k{RATIO_K}": ci.to_json(),
               "final_train_loss": {str(k): v for k, v in final_loss.items()}, "seconds": seconds}
    return Evidence(
        metrics=metrics,
        criterion=(f"the mean over seeds of the p = 0.5 error is non-increasing along k = {list(TRUNCATIONS)}, and "
                   f"the 95% bootstrap CI over seeds of error(p=0.5)/error(p=0) at k = {RATIO_K} has high < "
                   f"{RATIO_MAX}"),
        passed=passed,
        preconditions={"the p = 0 mapper fits the target at full width": Check(
            "p = 0 error at k = 128 (mean over seeds)", float(e0[:, -1].mean()), "<=", 0.05)},
        headline=(Check(f"error ratio p=0.5 / p=0 at k={RATIO_K} (CI high)", ci.high, "<", RATIO_MAX),
                  Check("largest increase of the p=0.5 error between successive k", float(diffs.max()), "<=", 0.0)),
        figures={"error_vs_truncation": fig},
        notes=("p = 0.5 errors (mean) " + " ".join(f"k{k}:{v:.4f}" for k, v in zip(TRUNCATIONS, mean05))
               + "; p = 0 " + " ".join(f"k{k}:{v:.4f}" for k, v in zip(TRUNCATIONS, e0.mean(0)))
               + f"; ratio at k = {RATIO_K}: {ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]."),
    )


# -------------------------------------------------------------------------------------------- personalisation
CONCEPT = "<c>"
SUPER = "red"
PROMPT = "a <c> triangle"
COLOUR, SHAPE = "orange", "triangle"
METHODS = ("neti_bypass", "neti_mapper", "textual_inversion")


def _word_id(tok, word: str) -> int:
    ids = tok(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not a single token")
    return int(ids[0])


class _Method:
    """One personalisation method on copies of the tiny model's tokenizer and text encoder (the UNet is shared and
    frozen): ``context(t)`` gives what the UNet sees for a batch of timesteps, ``params`` what is trained."""

    def __init__(self, kind: str, model, seed: int):
        from gradlab.generative.neti import NeTIMapper, NeTIStore, NeTITextEncoder, token_embedding_norm

        self.kind = kind
        self.tok = copy.deepcopy(model.tokenizer)
        self.tok.add_tokens([CONCEPT])
        self.te = copy.deepcopy(model.text_encoder)
        self.te.resize_token_embeddings(len(self.tok))
        self.te.requires_grad_(False)
        emb = self.te.get_input_embeddings().weight
        self.cid = _word_id(self.tok, CONCEPT)
        with torch.no_grad():
            emb[self.cid] = emb[_word_id(self.tok, SUPER)]
        self.ids = self.tok([PROMPT], padding="max_length", max_length=self.tok.model_max_length,
                            return_tensors="pt").input_ids
        self.store = NeTIStore()
        if kind == "textual_inversion":  # one learned vector, written at the placeholder by an embedding hook
            self.vec = torch.nn.Parameter(emb[self.cid].detach().clone())
            self.params = [self.vec]
            self.neti = None
        else:
            n_layers = len(_attn2(model.unet))
            mapper = NeTIMapper(emb.shape[1], n_layers, output_norm=token_embedding_norm(self.te, self.tok, SUPER),
                                use_bypass=(kind == "neti_bypass"), seed=seed)
            self.neti = NeTITextEncoder(self.te, self.tok, CONCEPT, mapper)
            self.params = list(mapper.parameters())

    def train(self, flag: bool = True) -> None:
        if self.neti is not None:
            self.neti.mapper.train(flag)

    def states(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample timesteps ``t`` (B,): sets the NeTI store, returns ``encoder_hidden_states`` (B, L, D)."""
        b = t.shape[0]
        if self.neti is None:
            ids = self.ids.expand(b, -1)
            mask = (ids == self.cid).unsqueeze(-1)
            handle = self.te.get_input_embeddings().register_forward_hook(
                lambda m, i, o: torch.where(mask, self.vec.to(o.dtype), o))
            try:
                return self.te(input_ids=ids).last_hidden_state
            finally:
                handle.remove()
        ctx = self.neti.encode([PROMPT] * b, t)
        self.store.set(ctx)
        return ctx.keys[0]


def _attn2(unet):
    from gradlab.generative._attention import cross_attention_names

    return cross_attention_names(unet)


def _eps(unet, method: _Method, x_t, t):
    from contextlib import nullcontext

    from gradlab.generative.neti import install_neti

    states = method.states(t)
    ctx = install_neti(unet, method.store) if method.neti is not None else nullcontext()
    with ctx:
        return unet(x_t, t, encoder_hidden_states=states).sample


def personalise(method: _Method, model, *, steps: int, batch: int, seed: int, lr: float = 5e-3) -> list[float]:
    """Train ``method`` with the DDPM loss on concept images; the same data, timesteps and noise for every method
    with the same ``seed``."""
    from gradlab.generative.tiny import make_shapes

    opt = torch.optim.AdamW(method.params, lr=lr, weight_decay=1e-2, foreach=True)
    g = torch.Generator().manual_seed(seed)
    sched = model.scheduler
    method.train(True)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 5)  # nested-dropout draws
        for step in range(steps):
            data = make_shapes(batch, seed=seed * 7919 + step, colours=(COLOUR,), shapes=(SHAPE,))
            t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
            noise = torch.randn(data.images.shape, generator=g)
            loss = F.mse_loss(_eps(model.unet, method, sched.add_noise(data.images, noise, t), t), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    method.train(False)
    return losses


def heldout_loss(method: _Method, model, data, t, noise) -> float:
    """DDPM loss on fixed held-out images, timesteps and noise (eval mode)."""
    with torch.no_grad():
        x_t = model.scheduler.add_noise(data.images, noise, t)
        return float(F.mse_loss(_eps(model.unet, method, x_t, t), noise))


def sample_method(method: _Method, model, latents, *, steps: int, guidance: float) -> torch.Tensor:
    """DDIM + classifier-free guidance with the method's per-step contexts (NeTI refreshes them every step)."""
    from gradlab.generative.neti import install_neti

    sched = model.ddim_scheduler(steps)
    n = latents.shape[0]
    z = latents * sched.init_noise_sigma
    with torch.no_grad():
        uncond = method.te(input_ids=method.tok([""] * n, padding="max_length", max_length=method.tok.model_max_length,
                                                return_tensors="pt").input_ids).last_hidden_state
        for t in sched.timesteps:
            tt = torch.full((n,), int(t))
            if method.neti is None:
                states = torch.cat([uncond, method.states(tt)])
                out = model.unet(torch.cat([z, z]), t, encoder_hidden_states=states).sample
            else:
                method.store.set(method.neti.encode([PROMPT] * n, tt).with_negative(uncond))
                with install_neti(model.unet, method.store):
                    out = model.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, uncond])).sample
            e_u, e_c = out.chunk(2)
            z = sched.step(e_u + guidance * (e_c - e_u), t, z).prev_sample
    return model.decode_latents(z).clamp(-1, 1)


@claim(paper=PAPER.key, title="With equal steps on one concept, held-out diffusion loss orders NeTI with bypass < "
       "NeTI mapper alone < single-vector textual inversion",
       timeouts={"smoke": 300, "quick": 1800}, needs=(tiny_t2i,))
def personalisation(run: ClaimRun) -> Evidence:
    from gradlab.generative.tiny import load_tiny_t2i, make_shapes

    scale = run.pick(smoke="smoke", quick="quick")
    steps = run.pick(smoke=3, quick=80, full=300)
    batch = run.pick(smoke=4, quick=16, full=16)
    n_held = run.pick(smoke=8, quick=64, full=128)
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    model = load_tiny_t2i(scale)
    model.unet.requires_grad_(False)
    run.progress(0.05, "model loaded")
    held = make_shapes(n_held, seed=424_242, colours=(COLOUR,), shapes=(SHAPE,))
    hg = torch.Generator().manual_seed(31337)
    t_held = torch.linspace(0, 999, n_held).round().long()[torch.randperm(n_held, generator=hg)]
    noise_held = torch.randn(held.images.shape, generator=hg)

    init = _Method("textual_inversion", model, seeds[0])
    init_loss = heldout_loss(init, model, held, t_held, noise_held)
    loss = {m: [] for m in METHODS}
    curves = {m: [] for m in METHODS}
    trained = {}
    t0 = time.perf_counter()
    for i, s in enumerate(seeds):
        for j, kind in enumerate(METHODS):
            method = _Method(kind, model, s)
            curves[kind].append(personalise(method, model, steps=steps, batch=batch, seed=s))
            loss[kind].append(heldout_loss(method, model, held, t_held, noise_held))
            if i == 0:
                trained[kind] = method
            run.progress(0.05 + 0.85 * (i * len(METHODS) + j + 1) / (len(seeds) * len(METHODS)), f"seed {s} {kind}")
    seconds = time.perf_counter() - t0
    ci_bypass = paired_bootstrap_ci(loss["neti_bypass"], loss["neti_mapper"], seed=run.seed)
    ci_mapper = paired_bootstrap_ci(loss["neti_mapper"], loss["textual_inversion"], seed=run.seed)
    passed = bool(ci_bypass.high < 0 and ci_mapper.high < 0)
    best_trained = min(float(np.mean(v)) for v in loss.values())

    n_show = 8
    latents = torch.randn((n_show, *model.sample_shape), generator=torch.Generator().manual_seed(run.seed + 99))
    samples = {k: sample_method(m, model, latents, steps=run.pick(smoke=3, quick=20), guidance=4.0)
               for k, m in trained.items()}
    run.progress(0.98, "sampled")

    fig = Figure(figsize=(12, 6.2))
    gs = fig.add_gridspec(3, n_show + 4)
    ax = fig.add_subplot(gs[:, :4])
    cols = {"neti_bypass": "tab:red", "neti_mapper": "tab:orange", "textual_inversion": "tab:blue"}
    for x, kind in enumerate(METHODS):
        v = np.array(loss[kind])
        ax.scatter(np.full(len(v), x), v, color=cols[kind], s=18, alpha=0.7, zorder=3)
        ax.plot([x - 0.25, x + 0.25], [v.mean()] * 2, color=cols[kind], lw=2.5)
    ax.axhline(init_loss, color="gray", ls="--", lw=1, label=f"TI at init ('{SUPER}')")
    ax.set_xticks(range(len(METHODS)), ["NeTI+bypass", "NeTI mapper", "TI (1 vector)"], fontsize=8)
    lo = min(min(v) for v in loss.values())
    ax.set_ylim(lo * 0.97, max(init_loss, max(max(v) for v in loss.values())) * 1.02)
    ax.set(ylabel="held-out DDPM loss (fixed t, noise; axis not from 0)",
           title=f"{steps} steps x batch {batch}; dots: {len(seeds)} seeds, bar: mean")
    ax.set_xlim(-0.6, len(METHODS) - 0.4)
    ax.legend(fontsize=8)
    for r, kind in enumerate(METHODS):
        for j in range(n_show):
            a = fig.add_subplot(gs[r, 4 + j])
            a.imshow(((samples[kind][j].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy(), interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if j == 0:
                a.set_ylabel(kind.replace("_", " "), fontsize=7)
    fig.suptitle(f"'{PROMPT}' after personalisation on {COLOUR} {SHAPE}s (samples: first seed, same noise per column)",
                 fontsize=9)
    fig.tight_layout()

    metrics = {"steps": steps, "batch": batch, "heldout_images": n_held, "seeds": list(seeds),
               "heldout_loss": {k: v for k, v in loss.items()},
               "heldout_loss_mean": {k: float(np.mean(v)) for k, v in loss.items()},
               "heldout_loss_ti_init": init_loss, "bypass_minus_mapper": ci_bypass.to_json(),
               "mapper_minus_ti": ci_mapper.to_json(),
               "train_loss_last10": {k: [float(np.mean(c[-10:])) for c in v] for k, v in curves.items()},
               "mapper_parameters": sum(p.numel() for p in trained["neti_bypass"].params), "seconds": seconds}
    return Evidence(
        metrics=metrics,
        criterion=(f"over {len(seeds)} seeds (same data, timesteps and noise for the three methods within a seed, "
                   f"{steps} AdamW steps each, lr 5e-3), the 95% bootstrap CIs over seeds of the paired held-out loss "
                   "differences (NeTI+bypass - mapper alone) and (mapper alone - single-vector TI) both have high < 0"),
        passed=passed,
        preconditions={"personalisation learns (best method below the untrained TI vector)": Check(
            "best mean held-out loss / TI at init", best_trained / init_loss, "<", 1.0)},
        headline=(Check("held-out loss NeTI+bypass - mapper (CI high)", ci_bypass.high, "<", 0.0),
                  Check("held-out loss mapper - TI (CI high)", ci_mapper.high, "<", 0.0)),
        figures={"heldout_loss_and_samples": fig},
        notes=("held-out loss mean: " + ", ".join(f"{k} {np.mean(v):.5f}" for k, v in loss.items())
               + f"; TI at init {init_loss:.5f}; bypass-mapper {ci_bypass.mean:.2e} [{ci_bypass.low:.2e}, "
               f"{ci_bypass.high:.2e}], mapper-TI {ci_mapper.mean:.2e} [{ci_mapper.low:.2e}, {ci_mapper.high:.2e}]. "
               f"Relative to TI's mean loss the gaps are {ci_bypass.mean / np.mean(loss['textual_inversion']):.3%} and "
               f"{ci_mapper.mean / np.mean(loss['textual_inversion']):.3%}. Super-category word {SUPER!r} (norm and TI "
               "init)."),
    )
