r"""NeTI, a neural space-time representation for text-to-image personalisation (Alaluf, Richardson, Metzer &
Cohen-Or, "A Neural Space-Time Representation for Text-to-Image Personalization", SIGGRAPH Asia 2023,
arXiv 2305.15391). The design follows the official MIT-licensed code (github.com/NeuralTextualInversion/NeTI,
``models/neti_mapper.py``, ``positional_encoding.py``, ``neti_clip_text_encoder.py``, ``xti_attention_processor.py``);
the code here is a reimplementation on current diffusers/transformers without subclassing CLIP.

A concept is a small network :math:`M(t, \ell)` mapping the denoising timestep :math:`t` and the cross-attention
layer :math:`\ell` of the UNet to the placeholder token's input embedding (and a *textual bypass* vector):

1. Fourier features of the raw integers :math:`x = (t, \ell)` (:math:`t \in 0..T-1`, :math:`\ell \in 0..L-1`):
   :math:`\gamma(x) = [\sin(Wx), \cos(Wx)] / \|\cdot\|` with fixed :math:`W \in \mathbb{R}^{F\times 2}`,
   :math:`W_{:,0} \sim N(0, \sigma_t^2)`, :math:`W_{:,1} \sim N(0, \sigma_\ell^2)`, :math:`\sigma_t = 0.03`,
   :math:`\sigma_\ell = 2`, :math:`F = 1024`.
2. An input layer initialised with the encodings of the anchors :math:`\{0, 100, \dots, 900\} \times \{0..L-1\}`
   (its output is the similarity to each anchor), then
   ``Linear(A,128) -> LayerNorm -> LeakyReLU -> Linear(128,128) -> LayerNorm -> LeakyReLU`` giving :math:`h`.
3. Nested dropout (training): with probability :math:`p = 0.5` per sample, :math:`k \sim U\{0..127\}` and
   :math:`h_{k:} = 0`; at inference ``truncation_idx`` :math:`k` zeroes :math:`h_{k:}`. Small :math:`k` keeps the
   coarse, editable part of the concept, large :math:`k` its details.
4. ``Linear(128, 2D)``; the whole output is rescaled to :math:`\|e_{\text{super}}\|` (the norm of the
   super-category word's embedding) and split into the token embedding :math:`e` and the bypass :math:`b`.

Text side (:class:`NeTITextEncoder`): :math:`e` replaces the placeholder's row of the input embeddings (a forward
hook on ``get_input_embeddings()``), all layers as one batch. With :math:`h` the last hidden state before the final
LayerNorm at the placeholder position, keys use :math:`\mathrm{LN}(h)` and values
:math:`\mathrm{LN}(h + \beta\,\|h\|\, b/\|b\|)` with :math:`\beta = 0.2` (other positions are unchanged).

UNet side (:class:`NeTIAttnProcessor`): the cross-attention layer with index :math:`\ell` in *execution order*
(down, mid, up blocks; not ``unet.attn_processors`` order, which puts the mid block last) takes its keys from
``store.context.keys[ℓ]`` and its values from ``store.context.values[ℓ]``.

Use::

    mapper = NeTIMapper(embed_dim=768, num_layers=16, output_norm=token_embedding_norm(te, tok, "cat"))
    neti = NeTITextEncoder(te, tok, "<cat>", mapper)
    store = NeTIStore()
    with install_neti(unet, store):
        for t in scheduler.timesteps:
            store.set(neti.encode(["a photo of <cat>"], t).with_negative(uncond))
            eps = unet(torch.cat([x, x]), t, store.context.keys[0]).sample
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_int, check_positive, check_range, check_tensor, check_type
from gradlab.generative._attention import attend, cross_attention_names

__all__ = ["NeTIMapper", "NeTIOutput", "NeTITextEncoder", "NeTIContext", "NeTIStore", "NeTIAttnProcessor",
           "install_neti", "neti_layer_names", "token_embedding_norm", "save_mapper", "load_mapper"]


@dataclass
class NeTIOutput:
    """What :class:`NeTIMapper` returns: ``embedding`` ``(N, D)`` and ``bypass`` ``(N, D)`` (``None`` without)."""

    embedding: torch.Tensor
    bypass: torch.Tensor | None


class NeTIMapper(nn.Module):
    r"""The (timestep, layer) -> (token embedding, bypass) network of NeTI.

    Args:
        embed_dim: the text encoder's hidden size :math:`D`.
        num_layers: number of UNet cross-attention layers :math:`L` (16 in SD 1.x).
        num_timesteps: training timesteps :math:`T` (1000); ``t`` must lie in ``[0, T)``.
        output_norm: :math:`\|e_{\text{super}}\|`, the norm the whole output is rescaled to (``None``: no rescale).
        use_bypass: also output the textual-bypass vector (output width :math:`2D`).
        hidden_dim: width of the MLP (128).
        num_freqs: Fourier frequencies :math:`F` (1024; encoding width :math:`2F`).
        sigma_t, sigma_l: standard deviations of the time and layer frequencies (0.03, 2.0).
        time_anchors: anchor timesteps of the input layer (default ``0, 100, ..., 900``).
        nested_dropout_p: probability per sample of nested dropout in training mode (0.5).
        seed: seed of the fixed Fourier frequencies and of the initialisation.
    """

    def __init__(self, embed_dim: int, num_layers: int, *, num_timesteps: int = 1000, output_norm: float | None = None,
                 use_bypass: bool = True, hidden_dim: int = 128, num_freqs: int = 1024, sigma_t: float = 0.03,
                 sigma_l: float = 2.0, time_anchors: Sequence[int] | None = None, nested_dropout_p: float = 0.5,
                 seed: int = 0) -> None:
        super().__init__()
        embed_dim = check_int("embed_dim", embed_dim, minimum=1)
        num_layers = check_int("num_layers", num_layers, minimum=1)
        num_timesteps = check_int("num_timesteps", num_timesteps, minimum=1)
        if output_norm is not None:
            output_norm = check_positive("output_norm", output_norm)
        check_type("use_bypass", use_bypass, bool)
        hidden_dim = check_int("hidden_dim", hidden_dim, minimum=1)
        num_freqs = check_int("num_freqs", num_freqs, minimum=1)
        sigma_t = check_positive("sigma_t", sigma_t)
        sigma_l = check_positive("sigma_l", sigma_l)
        nested_dropout_p = check_range("nested_dropout_p", nested_dropout_p, 0.0, 1.0, high_inclusive=True)
        seed = check_int("seed", seed)
        if time_anchors is None:
            time_anchors = list(range(0, num_timesteps, max(1, num_timesteps // 10)))[:10]
        anchors_t = [check_int("time_anchors item", a, minimum=0, maximum=num_timesteps - 1) for a in time_anchors]
        if not anchors_t:
            raise ValueError("time_anchors must not be empty")
        self.config: dict[str, Any] = dict(
            embed_dim=embed_dim, num_layers=num_layers, num_timesteps=num_timesteps, output_norm=output_norm,
            use_bypass=use_bypass, hidden_dim=hidden_dim, num_freqs=num_freqs, sigma_t=sigma_t, sigma_l=sigma_l,
            time_anchors=anchors_t, nested_dropout_p=nested_dropout_p, seed=seed)
        self.embed_dim, self.num_layers, self.num_timesteps = embed_dim, num_layers, num_timesteps
        self.output_norm, self.use_bypass, self.hidden_dim = output_norm, use_bypass, hidden_dim
        self.nested_dropout_p = nested_dropout_p
        g = torch.Generator().manual_seed(seed)
        freqs = torch.randn(num_freqs, 2, generator=g) * torch.tensor([sigma_t, sigma_l])
        self.register_buffer("freqs", freqs)
        at = torch.tensor(anchors_t, dtype=torch.float32).repeat_interleave(num_layers)
        al = torch.arange(num_layers, dtype=torch.float32).repeat(len(anchors_t))
        n_anchors = at.numel()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.input_layer = nn.Linear(2 * num_freqs, n_anchors)
            self.mlp = nn.Sequential(nn.Linear(n_anchors, hidden_dim), nn.LayerNorm(hidden_dim), nn.LeakyReLU(),
                                     nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.LeakyReLU())
            self.output_layer = nn.Linear(hidden_dim, embed_dim * (2 if use_bypass else 1))
        with torch.no_grad():
            self.input_layer.weight.copy_(self.encode(at, al))
            self.input_layer.bias.zero_()

    def encode(self, timesteps: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        r"""The L2-normalised Fourier features :math:`\gamma(t, \ell)`, ``(N, 2F)``, of raw ``t`` and ``ℓ``."""
        x = torch.stack([timesteps.to(self.freqs.dtype), layers.to(self.freqs.dtype)], dim=-1)
        proj = x @ self.freqs.T
        return F.normalize(torch.cat([proj.sin(), proj.cos()], dim=-1), dim=-1)

    def _inputs(self, timesteps: torch.Tensor | int, layers: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.freqs.device
        t = torch.as_tensor(timesteps, device=dev)
        lyr = torch.as_tensor(layers, device=dev)
        if t.ndim > 1 or lyr.ndim > 1:
            raise ValueError(f"timesteps and layers must be scalars or 1-d; got shapes {tuple(t.shape)}, "
                             f"{tuple(lyr.shape)}")
        t, lyr = torch.broadcast_tensors(t.reshape(-1), lyr.reshape(-1))
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError("timesteps contain NaN or inf")
        if lyr.is_floating_point() or lyr.is_complex():
            raise TypeError(f"layers must be integers; got dtype {lyr.dtype}")
        if bool((t < 0).any()) or bool((t >= self.num_timesteps).any()):
            raise ValueError(f"timesteps must lie in [0, {self.num_timesteps}); got range "
                             f"[{float(t.min())}, {float(t.max())}]")
        if bool((lyr < 0).any()) or bool((lyr >= self.num_layers).any()):
            raise ValueError(f"layers must lie in [0, {self.num_layers}); got range "
                             f"[{int(lyr.min())}, {int(lyr.max())}]")
        return t, lyr

    def hidden(self, timesteps: torch.Tensor | int, layers: torch.Tensor | int,
               truncation_idx: int | None = None) -> torch.Tensor:
        """The 128-d code :math:`h` after nested dropout (training) and truncation (``h[:, k:] = 0``)."""
        t, lyr = self._inputs(timesteps, layers)
        h = self.mlp(self.input_layer(self.encode(t, lyr)))
        idx = torch.arange(self.hidden_dim, device=h.device)
        if self.training and self.nested_dropout_p > 0:
            n = h.shape[0]
            drop = torch.rand(n, device=h.device) < self.nested_dropout_p
            k = torch.randint(0, self.hidden_dim, (n,), device=h.device)
            keep = (idx.unsqueeze(0) < k.unsqueeze(1)) | ~drop.unsqueeze(1)
            h = h * keep.to(h.dtype)
        if truncation_idx is not None:
            k = check_int("truncation_idx", truncation_idx, minimum=0, maximum=self.hidden_dim)
            h = h * (idx < k).to(h.dtype)
        return h

    def forward(self, timesteps: torch.Tensor | int, layers: torch.Tensor | int, *,
                truncation_idx: int | None = None) -> NeTIOutput:
        """Embeddings (and bypass vectors) for ``N`` pairs ``(t, ℓ)`` (broadcast; scalars allowed)."""
        out = self.output_layer(self.hidden(timesteps, layers, truncation_idx))
        if self.output_norm is not None:
            out = F.normalize(out, dim=-1) * self.output_norm
        if self.use_bypass:
            return NeTIOutput(out[:, : self.embed_dim], out[:, self.embed_dim:])
        return NeTIOutput(out, None)


def save_mapper(mapper: NeTIMapper, path: str | os.PathLike) -> Path:
    """Write ``mapper`` (config + state dict) to ``path`` atomically (temporary file renamed into place)."""
    check_type("mapper", mapper, NeTIMapper)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"format": "gradlab.neti_mapper/1", "config": dict(mapper.config),
                    "state_dict": {k: v.detach().cpu() for k, v in mapper.state_dict().items()}}, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_mapper(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> NeTIMapper:
    """Read a mapper written by :func:`save_mapper` (``torch.load(..., weights_only=True)``); in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no NeTI mapper file at {path}")
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "gradlab.neti_mapper/1":
        raise ValueError(f"{path} is not a NeTI mapper file written by save_mapper")
    mapper = NeTIMapper(**blob["config"])
    mapper.load_state_dict(blob["state_dict"])
    return mapper.eval()


def token_embedding_norm(text_encoder: nn.Module, tokenizer: Any, word: str) -> float:
    """:math:`\\|e_{\\text{word}}\\|`: the norm of ``word``'s input-embedding row (the super-category norm)."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"word must be a single token; {word!r} tokenizes to {len(ids)} ids")
    return float(text_encoder.get_input_embeddings().weight[ids[0]].detach().norm())


@dataclass
class NeTIContext:
    """Per-layer text contexts: ``keys`` and ``values`` ``(num_layers, B, L, D)`` (values carry the bypass)."""

    keys: torch.Tensor
    values: torch.Tensor

    def __post_init__(self) -> None:
        check_tensor("keys", self.keys, ndim=4, floating=True)
        check_tensor("values", self.values, ndim=4, floating=True)
        if self.keys.shape != self.values.shape:
            raise ValueError(f"keys and values must have one shape; got {tuple(self.keys.shape)} and "
                             f"{tuple(self.values.shape)}")

    @property
    def num_layers(self) -> int:
        return int(self.keys.shape[0])

    def with_negative(self, negative: torch.Tensor) -> "NeTIContext":
        """Prepend the negative prompt's ordinary states ``(B, L, D)`` (same for every layer, keys = values), as
        the unconditional half of a classifier-free-guidance batch ``[uncond, cond]``."""
        check_tensor("negative", negative, ndim=3, floating=True)
        if negative.shape != self.keys.shape[1:]:
            raise ValueError(f"negative must have shape {tuple(self.keys.shape[1:])}; got {tuple(negative.shape)}")
        neg = negative.to(self.keys).unsqueeze(0).expand(self.num_layers, -1, -1, -1)
        return NeTIContext(torch.cat([neg, self.keys], 1), torch.cat([neg, self.values], 1))


class NeTITextEncoder:
    """Runs a CLIP text encoder with NeTI's per-(t, ℓ) placeholder embedding and the textual bypass.

    Args:
        text_encoder: a ``transformers.CLIPTextModel`` (not modified; a hook is attached during :meth:`encode`).
        tokenizer: its tokenizer, which must know ``placeholder_token`` as one token.
        placeholder_token: the concept's token (``"<cat>"``); its row of the embedding table is never read.
        mapper: a :class:`NeTIMapper` with ``embed_dim`` equal to the encoder's hidden size.
        bypass_scale: :math:`\\beta` of the bypass (0.2).
    """

    def __init__(self, text_encoder: nn.Module, tokenizer: Any, placeholder_token: str, mapper: NeTIMapper, *,
                 bypass_scale: float = 0.2) -> None:
        from gradlab.generative.model import final_layer_norm

        check_type("text_encoder", text_encoder, nn.Module)
        check_type("placeholder_token", placeholder_token, str)
        check_type("mapper", mapper, NeTIMapper)
        self.bypass_scale = check_positive("bypass_scale", bypass_scale, allow_zero=True)
        ids = tokenizer(placeholder_token, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"placeholder_token {placeholder_token!r} must be one token of the tokenizer; it "
                             f"tokenizes to {len(ids)} ids (add it with tokenizer.add_tokens and resize the encoder)")
        emb = text_encoder.get_input_embeddings()
        if ids[0] >= emb.num_embeddings:
            raise ValueError(f"placeholder id {ids[0]} has no row in the text encoder's {emb.num_embeddings} "
                             "embeddings (call text_encoder.resize_token_embeddings(len(tokenizer)))")
        if emb.embedding_dim != mapper.embed_dim:
            raise ValueError(f"mapper.embed_dim ({mapper.embed_dim}) must equal the text encoder's hidden size "
                             f"({emb.embedding_dim})")
        self.text_encoder, self.tokenizer, self.mapper = text_encoder, tokenizer, mapper
        self.placeholder_token, self.placeholder_id = placeholder_token, int(ids[0])
        self.final_layer_norm = final_layer_norm(text_encoder)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(B, model_max_length)`` padded like a Stable Diffusion pipeline."""
        return self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids

    def encode(self, prompts: str | Sequence[str], timesteps: torch.Tensor | int, *,
               truncation_idx: int | None = None) -> NeTIContext:
        """Keys and values ``(num_layers, B, L, D)`` of ``prompts`` at ``timesteps`` (an int or ``(B,)``), all
        layers in one text-encoder call (rows layer-major). Every prompt must contain the placeholder."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a string or a non-empty list of strings")
        dev = self.mapper.freqs.device
        ids = self.tokenize(prompts).to(dev)
        mask = ids == self.placeholder_id
        lacking = [p for p, m in zip(prompts, mask.any(-1).tolist()) if not m]
        if lacking:
            raise ValueError(f"prompts must contain the placeholder {self.placeholder_token!r}; missing in {lacking}")
        b, n_l = ids.shape[0], self.mapper.num_layers
        t = torch.as_tensor(timesteps, device=dev).reshape(-1)
        if t.numel() not in (1, b):
            raise ValueError(f"timesteps must be an int or hold one value per prompt ({b}); got {t.numel()}")
        t = t.expand(b)
        rows_t = t.repeat(n_l)
        rows_l = torch.arange(n_l, device=dev).repeat_interleave(b)
        out = self.mapper(rows_t, rows_l, truncation_idx=truncation_idx)
        ids_rows = ids.repeat(n_l, 1)
        mask_rows = mask.repeat(n_l, 1).unsqueeze(-1)
        emb = out.embedding

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            return torch.where(mask_rows, emb.unsqueeze(1).to(output.dtype), output)

        handle = self.text_encoder.get_input_embeddings().register_forward_hook(hook)
        try:
            res = self.text_encoder(input_ids=ids_rows, output_hidden_states=True)
        finally:
            handle.remove()
        keys = res.last_hidden_state
        if out.bypass is not None and self.bypass_scale > 0:
            pre = res.hidden_states[-1]
            bp = F.normalize(out.bypass.to(pre.dtype), dim=-1).unsqueeze(1)
            shifted = pre + self.bypass_scale * pre.norm(dim=-1, keepdim=True) * bp
            values = self.final_layer_norm(torch.where(mask_rows, shifted, pre))
        else:
            values = keys
        shape = (n_l, b, *keys.shape[1:])
        return NeTIContext(keys.reshape(shape), values.reshape(shape))


class NeTIStore:
    """The side channel from the text side to the processors: the current :class:`NeTIContext`."""

    def __init__(self) -> None:
        self.context: NeTIContext | None = None

    def set(self, context: NeTIContext) -> None:
        check_type("context", context, NeTIContext)
        self.context = context

    def clear(self) -> None:
        self.context = None


class NeTIAttnProcessor:
    """Cross-attention processor for UNet layer ``layer_idx`` (execution order): keys from
    ``store.context.keys[layer_idx]``, values from ``store.context.values[layer_idx]``; otherwise
    ``AttnProcessor2_0``. The ``encoder_hidden_states`` passed to the UNet only fix the batch and are not read."""

    def __init__(self, layer_idx: int, store: NeTIStore) -> None:
        self.layer_idx = check_int("layer_idx", layer_idx, minimum=0)
        check_type("store", store, NeTIStore)
        self.store = store

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        ctx = self.store.context
        if ctx is None:
            raise RuntimeError("NeTIStore.context is empty: call store.set(neti_text_encoder.encode(...)) before "
                               "the UNet")
        if self.layer_idx >= ctx.num_layers:
            raise ValueError(f"layer {self.layer_idx} needs a context with more than {ctx.num_layers} layers "
                             "(mapper.num_layers must equal the UNet's cross-attention layer count)")
        keys = ctx.keys[self.layer_idx].to(device=hidden_states.device, dtype=hidden_states.dtype)
        values = ctx.values[self.layer_idx].to(device=hidden_states.device, dtype=hidden_states.dtype)
        if keys.shape[0] != hidden_states.shape[0]:
            raise ValueError(f"the NeTI context holds {keys.shape[0]} rows; the UNet batch has {hidden_states.shape[0]}"
                             " (use context.with_negative(uncond) for classifier-free guidance)")

        def kv(attn_: Any, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            v_in = attn_.norm_encoder_hidden_states(values) if attn_.norm_cross else values
            return attn_.to_k(context), attn_.to_v(v_in)

        return attend(attn, hidden_states, keys, attention_mask, temb, kv)


def neti_layer_names(unet: nn.Module) -> list[str]:
    """The ``attn2`` module paths of ``unet`` in execution order (down, mid, up): layer index -> name."""
    return cross_attention_names(unet)


@contextlib.contextmanager
def install_neti(unet: nn.Module, store: NeTIStore) -> Iterator[list[str]]:
    """Put :class:`NeTIAttnProcessor` ``(ℓ, store)`` on the ``ℓ``-th ``attn2`` (execution order) for the ``with``
    block and restore the previous processors afterwards, also after an exception. Yields the layer names."""
    check_type("unet", unet, nn.Module)
    check_type("store", store, NeTIStore)
    names = neti_layer_names(unet)
    original = dict(unet.attn_processors)
    new = dict(original)
    for i, n in enumerate(names):
        new[n + ".processor"] = NeTIAttnProcessor(i, store)
    unet.set_attn_processor(new)
    try:
        yield names
    finally:
        unet.set_attn_processor(original)
