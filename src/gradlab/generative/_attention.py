"""The attention computation shared by the custom cross-attention processors (AlignIT, NeTI).

diffusers' ``AttnProcessor2_0`` computes ``softmax(q k^T / sqrt(d)) v`` with ``q = to_q(h)``, ``k = to_k(c)``,
``v = to_v(c)`` for a context ``c`` and then the output projection. The processors of this package differ from it
only in where ``k`` and ``v`` come from, so :func:`attend` runs exactly ``AttnProcessor2_0``'s steps (spatial norm,
4-d input, attention mask, group norm, ``norm_cross``, ``norm_q``/``norm_k``, SDPA, ``to_out``, residual and
``rescale_output_factor``) with the key/value projections delegated to a callback. Given
``lambda attn, c: (attn.to_k(c), attn.to_v(c))`` it reproduces ``AttnProcessor2_0`` operation for operation.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

KVFn = Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``kv_fn(attn, context) -> (key, value)``, each ``(batch, tokens, inner_dim)``, ``context`` already cross-normed."""


def attend(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
           attention_mask: torch.Tensor | None, temb: torch.Tensor | None, kv_fn: KVFn) -> torch.Tensor:
    """``AttnProcessor2_0.__call__`` with ``key, value = kv_fn(attn, context)``."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
    batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                      else encoder_hidden_states.shape)
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key, value = kv_fn(attn, encoder_hidden_states)
    inner_dim = key.shape[-1]
    head_dim = inner_dim // attn.heads
    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                   is_causal=False)
    hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
    hidden_states = hidden_states.to(query.dtype)
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if input_ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


def cross_attention_names(unet: Any) -> list[str]:
    """Module paths of the cross-attention (``attn2``) layers of a diffusers UNet in execution order.

    ``unet.attn_processors`` follows module registration order, which in ``UNet2DConditionModel`` lists the down
    blocks, then the *up* blocks, then the mid block; the forward pass runs down, mid, up. Within a group the
    registration order is the execution order (resnet/attention pairs by index, transformer blocks by index).
    """
    procs = getattr(unet, "attn_processors", None)
    if not isinstance(procs, dict):
        raise TypeError(f"unet must be a diffusers model with attention processors; got {type(unet).__name__}")
    names = [n[: -len(".processor")] for n in procs if n.endswith("attn2.processor")]
    if not names:
        raise ValueError("unet has no cross-attention (attn2) layers")
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    order = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (rank.get(n.split(".")[0], 3), order[n]))
