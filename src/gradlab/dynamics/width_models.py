"""Width-parameterised model factories for coordinate checks and learning-rate transfer (muP experiments).

Plain ``nn.Module`` code: nothing here knows about parametrisations, which are applied afterwards with
:func:`gradlab.dynamics.parametrization.abc_param_groups`. The one architectural muP switch that cannot be
expressed by init and learning rates, the attention-logit scale ``1/d_head`` instead of ``1/sqrt(d_head)``
(Tensor Programs V, Sec. 4), is the ``attn_scale`` argument of :class:`TinyTransformer`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gradlab.core import check_choice, check_int

__all__ = ["MLP", "TinyTransformer"]


class MLP(nn.Module):
    """``in -> width -> ... -> width -> out`` with ``num_hidden_layers`` hidden layers and ReLU (or tanh)."""

    def __init__(
        self, in_features: int, width: int, out_features: int, num_hidden_layers: int = 2, activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, minimum=1)
        check_int("width", width, minimum=1)
        check_int("out_features", out_features, minimum=1)
        check_int("num_hidden_layers", num_hidden_layers, minimum=1)
        check_choice("activation", activation, ("relu", "tanh"))
        dims = [in_features] + [width] * num_hidden_layers
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=bias) for i, o in zip(dims[:-1], dims[1:]))
        self.readout = nn.Linear(width, out_features, bias=bias)
        self.act = torch.relu if activation == "relu" else torch.tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(layer(x))
        return self.readout(x)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, attn_scale: str) -> None:
        super().__init__()
        self.heads, self.attn_scale = heads, attn_scale
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        d = w // self.heads
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        scale = 1.0 / d if self.attn_scale == "mup" else 1.0 / math.sqrt(d)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, w))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Pre-LN causal transformer on token ids: (batch, seq) -> logits (batch, seq, vocab).

    Args:
        vocab: vocabulary size; width: model width (divisible by ``heads``); depth: number of blocks;
        heads: number of heads (fixed, so ``d_head`` grows with width); max_len: positions;
        attn_scale: ``"sp"`` (``1/sqrt(d_head)``) or ``"mup"`` (``1/d_head``).
    """

    def __init__(
        self, vocab: int, width: int, depth: int = 2, heads: int = 4, max_len: int = 64, attn_scale: str = "sp"
    ) -> None:
        super().__init__()
        check_int("vocab", vocab, minimum=2)
        check_int("width", width, minimum=1)
        check_int("depth", depth, minimum=1)
        check_int("heads", heads, minimum=1)
        check_int("max_len", max_len, minimum=1)
        check_choice("attn_scale", attn_scale, ("sp", "mup"))
        if width % heads:
            raise ValueError(f"width must be divisible by heads; got width={width}, heads={heads}")
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(max_len, width)
        self.blocks = nn.ModuleList(_Block(width, heads, attn_scale) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.readout = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x))
