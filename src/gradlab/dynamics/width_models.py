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

from gradlab.core import check_choice, check_int, check_tensor
from gradlab.dynamics._validation import check_bool, check_data, check_same_dtype, under_transform

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
        check_bool("bias", bias)
        self.in_features = in_features
        dims = [in_features] + [width] * num_hidden_layers
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=bias) for i, o in zip(dims[:-1], dims[1:]))
        self.readout = nn.Linear(width, out_features, bias=bias)
        self.act = torch.relu if activation == "relu" else torch.tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features) -> (..., out_features)``."""
        check_data("x", x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}); got {tuple(x.shape)}")
        check_same_dtype("x", x, self.readout.weight.dtype, "the model's parameter dtype; convert with .to(...)")
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
        """Token ids ``(batch, seq)`` with ``1 <= seq <= max_len`` and ids in ``[0, vocab)`` -> logits."""
        check_tensor("tokens", tokens, ndim=2)
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be integer token ids; got dtype {tokens.dtype}")
        t, vocab, max_len = tokens.shape[1], self.embed.num_embeddings, self.pos.num_embeddings
        if not 1 <= t <= max_len:
            raise ValueError(f"tokens must have 1 to max_len={max_len} positions; got shape {tuple(tokens.shape)}")
        if tokens.numel() and not under_transform(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(f"tokens must be ids in [0, {vocab}); got values in [{int(tokens.min())}, "
                             f"{int(tokens.max())}]")
        x = self.embed(tokens) + self.pos(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x))
