"""Small random diffusers/transformers parts for the AlignIT and NeTI unit tests (built in-process, no download)."""

from __future__ import annotations

import copy

import torch


def tiny_tokenizer(extra_tokens=("<v*>",)):
    from gradlab.generative.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    if extra_tokens:
        tok.add_tokens(list(extra_tokens))
    return tok


def tiny_text_encoder(tok, seed=0):
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        te = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=tok.model_max_length, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    return te.eval()


def tiny_unet(seed=0, *, mid=True):
    """Research note §0.1's UNet (0.985M parameters, 4 cross-attention layers: down, up, up, mid)."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    return unet.eval()


def customised(te, unet, seed=1, scale=0.5):
    """Copies with a perturbed text encoder (every weight, as DreamBooth) and perturbed attn2 to_k/to_v
    (as Custom Diffusion)."""
    g = torch.Generator().manual_seed(seed)
    cte, cunet = copy.deepcopy(te), copy.deepcopy(unet)
    with torch.no_grad():
        for p in cte.parameters():
            p.add_(scale * p.std().nan_to_num(0.1) * torch.randn(p.shape, generator=g))
        for name, mod in cunet.named_modules():
            if name.endswith("attn2"):
                for lin in (mod.to_k, mod.to_v):
                    lin.weight.add_(scale * torch.randn(lin.weight.shape, generator=g) * lin.weight.std())
    return cte, cunet
