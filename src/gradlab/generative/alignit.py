r"""AlignIT: key/value infusion for customised text-to-image models (Agarwal, Karanam & Srinivasan,
"AlignIT: Enhancing Prompt Alignment in Customization of Text-to-Image Models", arXiv 2406.18893).

Customisation methods (Textual Inversion, Custom Diffusion, DreamBooth) change the token embedding, the text
encoder or the cross-attention projections :math:`W_k, W_v`; CLIP's causal attention then carries the concept into
every later token, so the keys and values of *all* prompt tokens move away from the base model's and the rest of
the prompt is rendered less faithfully. AlignIT is a training-free inference-time fix: in every cross-attention
layer and every denoising step the keys and values of the prompt :math:`p` are

.. math::
    K_i = \begin{cases} W_k^{\text{custom}}\, E^{\text{custom}}(d)_{\pi(i)} & i \in \mathcal{C} \\
                        W_k^{\text{base}}\, E^{\text{base}}(p)_i & \text{otherwise,} \end{cases}
    \qquad V_i \text{ likewise with } W_v,

where :math:`\mathcal{C}` are the concept-token positions of :math:`p`, :math:`d` is a short *dummy prompt*
holding the concept (``dummy_template``, e.g. ``"a photo of {}"``), :math:`\pi(i)` the position of the same token id
in :math:`d`, and :math:`E` the text encoders' final-layer-normed outputs. Only the conditional half of a
classifier-free-guidance batch ``[uncond, cond]`` is changed. Queries, the output projection and everything else
are those of the UNet being run (the customised one).

Assumptions (the paper's full text and code were not available; all are arguments): the dummy template; what the
base encoder sees at the concept position (``base_placeholder``: a word of the base vocabulary, or the concept ids
themselves when the base encoder has rows for them, as for a rare-token concept); the concept's own positions only
are infused (a following class word is not); the unconditional branch is untouched.

Use::

    ctrl = AlignITController(base_te, custom_te, tokenizer, ["<v*>"], "a photo of {}", base_placeholder="photo")
    cond = ctrl.encode(["a <v*> on the beach"])                  # base-encoder states; concept states stored
    with install_alignit(custom_unet, ctrl, base_unet=base_unet):
        eps = custom_unet(x, t, torch.cat([uncond, cond])).sample
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from gradlab.core.validation import check_type
from gradlab.generative._attention import attend, cross_attention_names

__all__ = ["AlignITController", "AlignITAttnProcessor", "install_alignit"]


def _single_token_id(tokenizer: Any, word: str, what: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{what} {word!r} must be a single token of the tokenizer; it tokenizes to {len(ids)} ids "
                         f"{ids} (add it with tokenizer.add_tokens and resize the text encoder's embeddings)")
    return int(ids[0])


class AlignITController:
    """Holds what AlignIT's processors need: base prompt states, concept positions and the concept's states.

    Args:
        base_text_encoder: the non-customised CLIP text encoder (``transformers.CLIPTextModel``).
        custom_text_encoder: the customised one (learned token row, fine-tuned weights, or the base itself).
        tokenizer: a tokenizer that knows every concept token as a single token.
        concept_tokens: the concept's token strings (``["<v*>"]``; several for a multi-vector concept), written
            into prompts joined by spaces.
        dummy_template: the dummy prompt, with ``{}`` where the concept goes (``"a photo of {}"``).
        base_placeholder: a single-token word fed to the base encoder in place of each concept token, or ``None``
            to feed the concept ids themselves (the base encoder must then have embedding rows for them).

    :meth:`encode` tokenises the prompts, runs the base encoder on them (concept ids replaced by the placeholder)
    and the customised encoder on the dummy prompt, and stores the position map for the processors. Set
    ``record`` to keep every processor call's keys and values in ``kv_log`` (layer name -> list of
    ``(key, value)``, full batch, before the head split).

    Without autograd the concept's keys and values (the customised ``to_k/to_v`` of the dummy-prompt states) are
    computed once per layer after each :meth:`encode` and reused at every step; call :meth:`encode` again after
    changing the customised UNet's weights.
    """

    def __init__(self, base_text_encoder: nn.Module, custom_text_encoder: nn.Module, tokenizer: Any,
                 concept_tokens: Sequence[str], dummy_template: str = "a photo of {}", *,
                 base_placeholder: str | None = None) -> None:
        check_type("base_text_encoder", base_text_encoder, nn.Module)
        check_type("custom_text_encoder", custom_text_encoder, nn.Module)
        if isinstance(concept_tokens, str):
            concept_tokens = [concept_tokens]
        concept_tokens = list(concept_tokens)
        if not concept_tokens or not all(isinstance(c, str) and c.strip() for c in concept_tokens):
            raise ValueError(f"concept_tokens must be a non-empty list of non-empty strings; got {concept_tokens!r}")
        check_type("dummy_template", dummy_template, str)
        if dummy_template.count("{}") != 1:
            raise ValueError(f"dummy_template must contain '{{}}' exactly once; got {dummy_template!r}")
        if not callable(tokenizer) or not hasattr(tokenizer, "model_max_length"):
            raise TypeError(f"tokenizer must be a transformers tokenizer; got {type(tokenizer).__name__}")
        self.concept_ids = [_single_token_id(tokenizer, c, "concept token") for c in concept_tokens]
        if len(set(self.concept_ids)) != len(self.concept_ids):
            raise ValueError(f"concept_tokens must be distinct tokens; got {concept_tokens!r}")
        self.placeholder_id: int | None = None
        if base_placeholder is not None:
            check_type("base_placeholder", base_placeholder, str)
            self.placeholder_id = _single_token_id(tokenizer, base_placeholder, "base_placeholder")
        else:
            rows = base_text_encoder.get_input_embeddings().num_embeddings
            if max(self.concept_ids) >= rows:
                raise ValueError(f"the base text encoder has {rows} embedding rows, fewer than the concept ids "
                                 f"{self.concept_ids} need; pass base_placeholder (a word of the base vocabulary)")
        self.base_text_encoder = base_text_encoder
        self.custom_text_encoder = custom_text_encoder
        self.tokenizer = tokenizer
        self.concept_tokens = concept_tokens
        self.concept = " ".join(concept_tokens)
        self.dummy_template = dummy_template
        self.dummy_prompt = dummy_template.format(self.concept)
        dummy_ids = self.tokenize([self.dummy_prompt])
        missing = [c for c, i in zip(concept_tokens, self.concept_ids) if not bool((dummy_ids == i).any())]
        if missing:
            raise ValueError(f"the dummy prompt {self.dummy_prompt!r} loses concept tokens {missing} "
                             f"(truncated at model_max_length={tokenizer.model_max_length}?)")
        self.dummy_ids = dummy_ids
        self.record = False
        self.kv_log: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._mask: torch.Tensor | None = None
        self._gather: torch.Tensor | None = None
        self._dummy_states: torch.Tensor | None = None
        self._kv_cache: dict[tuple, tuple[Any, torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ text side
    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(B, model_max_length)``, padded and truncated like a Stable Diffusion pipeline."""
        return self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids

    @staticmethod
    def _encode(text_encoder: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        param = next(text_encoder.parameters())
        return text_encoder(input_ids=ids.to(param.device)).last_hidden_state

    def concept_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` bool: the positions holding a concept token."""
        ref = torch.tensor(self.concept_ids, dtype=ids.dtype, device=ids.device)
        return (ids.unsqueeze(-1) == ref).any(-1)

    def encode(self, prompts: str | Sequence[str], *, require_concept: bool = True) -> torch.Tensor:
        """Base-encoder states ``(B, L, D)`` of ``prompts`` (pass them as the conditional ``encoder_hidden_states``)
        and store the concept positions and the customised encoder's dummy-prompt states for the processors.

        A prompt without the concept raises ``ValueError`` unless ``require_concept=False``, in which case its
        keys and values are the base model's throughout.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a string or a non-empty list of strings")
        ids = self.tokenize(prompts)
        mask = self.concept_mask(ids)
        lacking = [p for p, m in zip(prompts, mask.any(-1).tolist()) if not m]
        if lacking and require_concept:
            raise ValueError(f"prompts must contain the concept {self.concept!r} (within "
                             f"model_max_length={self.tokenizer.model_max_length} tokens); missing in {lacking}")
        # position in the dummy prompt of the same token id (first occurrence); 0 where no concept
        eq = ids.unsqueeze(-1) == self.dummy_ids[0].view(1, 1, -1)
        gather = torch.where(mask, eq.int().argmax(-1), torch.zeros_like(ids))
        base_ids = ids
        if self.placeholder_id is not None:
            base_ids = torch.where(mask, torch.full_like(ids, self.placeholder_id), ids)
        base_states = self._encode(self.base_text_encoder, base_ids)
        self._dummy_states = self._encode(self.custom_text_encoder, self.dummy_ids)
        self._mask = mask.to(base_states.device)
        self._gather = gather.to(base_states.device)
        self.kv_log = {}
        self._kv_cache = {}
        return base_states

    @property
    def batch_size(self) -> int:
        if self._mask is None:
            raise RuntimeError("AlignITController.encode(prompts) must be called before the UNet runs")
        return int(self._mask.shape[0])

    def conditional_rows(self, n: int) -> slice:
        """Rows of an ``n``-row UNet batch that hold the conditional prompts: all of them (``n == B``) or the
        second half of a classifier-free-guidance batch ``[uncond, cond]`` (``n == 2B``)."""
        b = self.batch_size
        if n == b:
            return slice(0, b)
        if n == 2 * b:
            return slice(b, 2 * b)
        raise ValueError(f"the UNet batch has {n} rows; AlignIT was prepared for {b} prompts (expected {b} rows, "
                         f"or {2 * b} for [uncond, cond] classifier-free guidance)")

    def _concept_kv(self, attn: Any, dummy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``attn.to_k/to_v`` of the dummy-prompt states, computed once per layer and :meth:`encode` call when
        gradients are off (they do not change between denoising steps); recomputed whenever autograd is on."""
        if torch.is_grad_enabled():
            return attn.to_k(dummy)[0], attn.to_v(dummy)[0]
        key = (id(attn), dummy.device, dummy.dtype)
        hit = self._kv_cache.get(key)
        if hit is None or hit[0] is not attn:
            hit = (attn, attn.to_k(dummy)[0], attn.to_v(dummy)[0])
            self._kv_cache[key] = hit
        return hit[1], hit[2]

    def concept_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mask (B, L), gather (B, L), dummy_states (1, L_d, D))`` for the processors."""
        if self._mask is None or self._gather is None or self._dummy_states is None:
            raise RuntimeError("AlignITController.encode(prompts) must be called before the UNet runs")
        return self._mask, self._gather, self._dummy_states


class AlignITAttnProcessor:
    """Cross-attention processor (diffusers processor API, for ``attn2``) with AlignIT's keys and values.

    Conditional rows (see :meth:`AlignITController.conditional_rows`), non-concept positions: ``base_to_k/base_to_v``
    (the base model's projections; default: this layer's own, for customisations that leave the UNet unchanged)
    applied to the ``encoder_hidden_states`` passed in (the controller's base states). Conditional rows, concept
    positions: this layer's ``to_k/to_v`` (the customised UNet's) applied to the customised encoder's dummy-prompt
    states. Unconditional rows: this layer's ``to_k/to_v`` as in ``AttnProcessor2_0``, and so is everything else.
    """

    def __init__(self, controller: AlignITController, base_to_k: nn.Module | None = None,
                 base_to_v: nn.Module | None = None, name: str = "") -> None:
        check_type("controller", controller, AlignITController)
        if (base_to_k is None) != (base_to_v is None):
            raise ValueError("base_to_k and base_to_v must be given together (or neither)")
        self.controller = controller
        self.base_to_k = base_to_k
        self.base_to_v = base_to_v
        self.name = name

    def _kv(self, attn: Any, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctrl = self.controller
        rows = ctrl.conditional_rows(context.shape[0])
        mask, gather, dummy = ctrl.concept_inputs()
        dummy = dummy.to(device=context.device, dtype=context.dtype)
        if attn.norm_cross:
            dummy = attn.norm_encoder_hidden_states(dummy)
        to_k = self.base_to_k if self.base_to_k is not None else attn.to_k
        to_v = self.base_to_v if self.base_to_v is not None else attn.to_v
        cond = context[rows]
        ck, cv = ctrl._concept_kv(attn, dummy)  # (L_d, inner): the customised model's
        m = mask.unsqueeze(-1)
        key = torch.where(m, ck[gather], to_k(cond))
        value = torch.where(m, cv[gather], to_v(cond))
        if rows.start > 0:  # the unconditional half of [uncond, cond]: the customised model's own, untouched
            uncond = context[: rows.start]
            key = torch.cat([attn.to_k(uncond), key])
            value = torch.cat([attn.to_v(uncond), value])
        if ctrl.record:
            ctrl.kv_log.setdefault(self.name, []).append((key.detach().clone(), value.detach().clone()))
        return key, value

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("AlignITAttnProcessor is a cross-attention processor: encoder_hidden_states is required "
                             "(install it on attn2 layers only)")
        return attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb, self._kv)


@contextlib.contextmanager
def install_alignit(unet: nn.Module, controller: AlignITController, *,
                    base_unet: nn.Module | None = None) -> Iterator[dict[str, AlignITAttnProcessor]]:
    """Put :class:`AlignITAttnProcessor` on every ``attn2`` of ``unet`` (the customised UNet) for the ``with``
    block, leaving ``attn1`` alone, and restore the previous processors afterwards, also after an exception.

    ``base_unet``: the non-customised UNet whose ``attn2.to_k/to_v`` give the non-concept keys and values (same
    architecture); ``None`` when the customisation did not touch the UNet. Yields layer name -> processor.
    """
    check_type("unet", unet, nn.Module)
    check_type("controller", controller, AlignITController)
    names = cross_attention_names(unet)
    bases: dict[str, tuple[nn.Module | None, nn.Module | None]] = {n: (None, None) for n in names}
    if base_unet is not None:
        check_type("base_unet", base_unet, nn.Module)
        base_names = cross_attention_names(base_unet)
        if base_names != names:
            raise ValueError("base_unet must have the same cross-attention layers as unet; got "
                             f"{len(base_names)} vs {len(names)} (first differing: "
                             f"{next((a for a, b in zip(base_names, names) if a != b), None)})")
        for n in names:
            ba, ca = base_unet.get_submodule(n), unet.get_submodule(n)
            if ba.to_k.weight.shape != ca.to_k.weight.shape or ba.to_v.weight.shape != ca.to_v.weight.shape:
                raise ValueError(f"base_unet layer {n} has to_k/to_v shapes {tuple(ba.to_k.weight.shape)}, "
                                 f"{tuple(ba.to_v.weight.shape)}; unet has {tuple(ca.to_k.weight.shape)}, "
                                 f"{tuple(ca.to_v.weight.shape)}")
            bases[n] = (ba.to_k, ba.to_v)
    original = dict(unet.attn_processors)
    procs = {n: AlignITAttnProcessor(controller, *bases[n], name=n) for n in names}
    new = dict(original)
    for n, p in procs.items():
        new[n + ".processor"] = p
    unet.set_attn_processor(new)
    try:
        yield procs
    finally:
        unet.set_attn_processor(original)
