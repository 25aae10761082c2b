"""Cost of AlignIT's and NeTI's cross-attention processors: one UNet step over the same step with diffusers'
``AttnProcessor2_0``, measured side by side in one process (``torch.utils.benchmark``, interleaved rounds).

    OMP_NUM_THREADS=1 python benchmarks/generative.py [--rounds 7] [--min-run-time 0.3]

Two UNets with random weights:

* ``tiny``: the shared tiny model's UNet (0.985M parameters, 4 cross-attention layers, 16x16 pixels, text 16 x 32),
  batch 4 prompts under classifier-free guidance (8 rows);
* ``sd1x-shaped``: Stable Diffusion 1.x's block layout (``UNet2DConditionModel`` defaults: 2 layers per block,
  4 levels, 16 cross-attention layers, cross-attention dim 768, text 77 tokens) with narrow channels
  (32, 64, 64, 64) and 16x16 latents, batch 1 prompt under guidance (2 rows), so that a step takes tens of ms.

AlignIT runs with separate base ``to_k/to_v`` (the Custom Diffusion case: two K/V projections of the prompt per
layer plus the dummy prompt's). NeTI's per-layer contexts are precomputed (set in the store before the step);
the text encoding, one CLIP call on ``num_layers`` rows per step, is timed apart and reported relative to the
plain UNet step. Target (issue 13): processor ratios <= 1.15.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torch.utils import benchmark


def build(kind: str):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if kind == "tiny":
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
        return unet.eval(), dict(rows=8, channels=3, size=16, tokens=16, dim=32, te_layers=2, heads=4)
    unet = UNet2DConditionModel(sample_size=16, block_out_channels=(32, 64, 64, 64), cross_attention_dim=768,
                                attention_head_dim=8, norm_num_groups=16)
    return unet.eval(), dict(rows=2, channels=4, size=16, tokens=77, dim=768, te_layers=2, heads=12)


def text_parts(cfg: dict, extra: tuple[str, ...]):
    from transformers import CLIPTextConfig, CLIPTextModel

    from gradlab.generative.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer(model_max_length=cfg["tokens"])
    tok.add_tokens(list(extra))
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=cfg["dim"], intermediate_size=2 * cfg["dim"],
                                      num_attention_heads=cfg["heads"], num_hidden_layers=cfg["te_layers"],
                                      max_position_embeddings=cfg["tokens"], bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    return tok, te


def stmts(kind: str) -> tuple[dict, dict]:
    from diffusers.models.attention_processor import AttnProcessor2_0

    from gradlab.generative.alignit import AlignITController, AlignITAttnProcessor
    from gradlab.generative.neti import (NeTIAttnProcessor, NeTIMapper, NeTIStore, NeTITextEncoder,
                                         neti_layer_names)

    unet, cfg = build(kind)
    tok, te = text_parts(cfg, ("<v*>",))
    b = cfg["rows"] // 2
    x = torch.randn(cfg["rows"], cfg["channels"], cfg["size"], cfg["size"])
    prompts = ["a <v*> square"] * b
    with torch.no_grad():
        uncond = te(input_ids=tok([""] * b, padding="max_length", max_length=cfg["tokens"],
                                  return_tensors="pt").input_ids).last_hidden_state
    names = neti_layer_names(unet)
    base_unet = copy.deepcopy(unet)
    cte = copy.deepcopy(te)
    ctrl = AlignITController(te, cte, tok, ["<v*>"], "a photo of {}")
    with torch.no_grad():
        cond = ctrl.encode(prompts)
    ehs = torch.cat([uncond, cond])
    plain = {n + ".processor": AttnProcessor2_0() for n in (k[: -len(".processor")] for k in unet.attn_processors)}
    align = dict(plain)
    for n in names:
        bm = base_unet.get_submodule(n)
        align[n + ".processor"] = AlignITAttnProcessor(ctrl, bm.to_k, bm.to_v, name=n)
    store = NeTIStore()
    mapper = NeTIMapper(cfg["dim"], len(names), output_norm=1.0).eval()
    tok.add_tokens(["<c>"])
    te.resize_token_embeddings(len(tok))
    neti = NeTITextEncoder(te, tok, "<c>", mapper)
    with torch.no_grad():
        store.set(neti.encode(["a <c> square"] * b, 500).with_negative(uncond))
    neti_procs = dict(plain)
    for i, n in enumerate(names):
        neti_procs[n + ".processor"] = NeTIAttnProcessor(i, store)

    def step_with(procs):
        u = copy.deepcopy(unet)  # one copy per processor set, installed once (same weights)
        u.set_attn_processor(procs)

        def fn():
            with torch.no_grad():
                u(x, 500, encoder_hidden_states=ehs)
        return fn

    def plain_encode():
        with torch.no_grad():
            te(input_ids=tok(["a <c> square"] * b, padding="max_length", max_length=cfg["tokens"],
                             return_tensors="pt").input_ids)

    def neti_encode():
        with torch.no_grad():
            neti.encode(["a <c> square"] * b, 500)

    steps = {"plain": step_with(plain), "alignit": step_with(align), "neti": step_with(neti_procs)}
    text = {"plain_encode": plain_encode, "neti_encode": neti_encode}
    meta = {"params_M": sum(p.numel() for p in unet.parameters()) / 1e6, "cross_attention_layers": len(names),
            "rows": cfg["rows"], "latent": f"{cfg['channels']}x{cfg['size']}x{cfg['size']}",
            "text": f"{cfg['tokens']}x{cfg['dim']}"}
    return {**steps, **text}, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-run-time", type=float, default=0.3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for kind in ("tiny", "sd1x-shaped"):
        fns, meta = stmts(kind)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for k, fn in fns.items():  # warm-up
            fn()
        for _ in range(args.rounds):
            for k, fn in fns.items():
                m = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=1).blocked_autorange(
                    min_run_time=args.min_run_time)
                times[k].append(m.median)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{kind}: {meta}")
        print(f"  plain UNet step (AttnProcessor2_0): {med['plain'] * 1e3:.2f} ms")
        for k in ("alignit", "neti"):
            r = [a / p for a, p in zip(times[k], times["plain"])]
            print(f"  {k:8s} step / plain step: {statistics.median(r):.3f} (per-round min {min(r):.3f}, max "
                  f"{max(r):.3f}; target <= 1.15)")
        print(f"  NeTI text encoding ({meta['cross_attention_layers']} layers in one call) / plain encoding: "
              f"{med['neti_encode'] / med['plain_encode']:.2f}; / plain UNet step: "
              f"{med['neti_encode'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
