"""Baselines for codebook compression: per-channel uniform quantisation and k-means weight sharing.

Both compress every Linear/Conv weight of a model (or the named ``layers``) at ``bits`` bits per index and
return a :class:`~gradlab.compression.model.CompressedModel` with real storage (packed indices, fp16 tables):

* :func:`uniform_quantize` — asymmetric min–max uniform quantisation per output channel (one fp16 scale and
  offset per row: :math:`b + 32 R/|W|` bits per weight),
  :math:`\\hat W = s_r\\,\\operatorname{clip}(\\operatorname{round}
  ((W - z_r)/s_r), 0, 2^b-1) + z_r`;
* :func:`kmeans_quantize` — 1-D k-means codebooks (Deep Compression's weight sharing), by default one per tensor
  (``groups=1``), or one per contiguous group of rows *in the original order* (no re-ordering: that is JLCM's
  first ingredient, :class:`gradlab.compression.JLCM`): :math:`b + 16 G 2^b/|W|` bits per weight.

The input model is never modified.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from gradlab.compression.codebooks import group_kmeans_codebooks, uniform_affine
from gradlab.compression.model import CompressedModel, compressible_layers
from gradlab.compression.storage import CompressedWeight
from gradlab.core.seeding import torch_generator
from gradlab.core.validation import check_int

__all__ = ["kmeans_quantize", "uniform_quantize"]


def _rows(model: nn.Module, name: str) -> torch.Tensor:
    w = model.get_submodule(name).weight.detach()
    return w.reshape(w.shape[0], -1)


def uniform_quantize(model: nn.Module, bits: int, *, layers: Iterable[str] | None = None) -> CompressedModel:
    """Per-output-channel min–max uniform quantisation of the model's Linear/Conv weights to ``bits`` (1–8)."""
    check_int("bits", bits, minimum=1, maximum=8)
    names = compressible_layers(model, layers)
    weights = {}
    for n in names:
        w = _rows(model, n)
        idx, scale, offset = uniform_affine(w, bits)
        shape = model.get_submodule(n).weight.shape
        weights[n] = CompressedWeight.from_indices(idx.view(shape), bits, "affine", scales=scale, offsets=offset)
    return CompressedModel(copy.deepcopy(model), weights, method="uniform",
                           info={"bits": bits, "groups": "per output channel"})


def kmeans_quantize(model: nn.Module, bits: int, *, groups: int = 1, layers: Iterable[str] | None = None,
                    n_init: int = 4, seed: int = 0) -> CompressedModel:
    """k-means codebook quantisation at ``bits`` (1–8) with ``groups`` contiguous row groups per tensor (no
    re-ordering; a layer with fewer rows than ``groups`` uses one group per row). ``seed`` seeds k-means++."""
    check_int("bits", bits, minimum=1, maximum=8)
    check_int("groups", groups, minimum=1)
    check_int("n_init", n_init, minimum=1)
    check_int("seed", seed, minimum=0)
    names = compressible_layers(model, layers)
    weights = {}
    for n in names:
        w = _rows(model, n)
        gen = torch_generator(seed, device=w.device)
        g = min(groups, w.shape[0])
        idx, books = group_kmeans_codebooks(w, bits, g, n_init=n_init, generator=gen)
        shape = model.get_submodule(n).weight.shape
        weights[n] = CompressedWeight.from_indices(idx.view(shape), bits, "codebooks", codebooks=books)
    return CompressedModel(copy.deepcopy(model), weights, method="kmeans", info={"bits": bits, "groups": groups})
