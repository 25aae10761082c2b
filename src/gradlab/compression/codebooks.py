"""Initial codebooks and mappings of one weight matrix: k-means per group, shared codebook with scales, uniform.

All functions take the weight as ``(R, M)`` (output neurons × their weights) and split the rows into ``G``
contiguous groups (:func:`gradlab.compression.storage.group_sizes`). Codebooks are rounded to fp16 *before* the
mapping is chosen, so the mapping is the nearest-codeword assignment to the values that are actually stored.

* :func:`group_kmeans_codebooks` — one ``2^b``-codeword codebook per group by 1-D k-means
  (:func:`gradlab.compression.kmeans.kmeans_1d`), all groups in one batched call;
  :math:`I_{ri} = \\arg\\min_j |W_{ri} - C_{g(r)j}|`.
* :func:`scaled_codebook` — JLCM's "scales" variant (arXiv 2309.17361): group scale
  :math:`s_g = \\sqrt{\\operatorname{mean}_{r \\in g, i} W_{ri}^2}` and one codebook fitted by k-means to the pooled
  :math:`W_{ri}/s_{g(r)}`; :math:`\\hat W_{ri} = s_{g(r)} C_{I_{ri}}`.
* :func:`uniform_affine` — per-group asymmetric min–max uniform quantisation:
  :math:`s_g = (\\max - \\min)/(2^b - 1)`, :math:`z_g = \\min`, :math:`I = \\operatorname{clip}(\\operatorname{round}
  ((W - z_g)/s_g), 0, 2^b - 1)`, :math:`\\hat W = s_g I + z_g` (one group per row = per-channel).
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from gradlab.compression.kmeans import kmeans_1d, nearest_codeword
from gradlab.compression.storage import group_sizes, row_groups

__all__ = ["group_kmeans_codebooks", "scaled_codebook", "uniform_affine"]


def _fp16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(t.dtype)


def group_kmeans_codebooks(w: torch.Tensor, bits: int, groups: int, *, n_init: int = 4,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices (R, M), codebooks (G, 2^b))``: sorted, fp16-representable k-means codebooks per row group."""
    sizes = group_sizes(w.shape[0], groups)
    chunks = [c.reshape(-1) for c in torch.split(w, sizes)]
    vals = pad_sequence(chunks, batch_first=True)
    mask = pad_sequence([torch.ones_like(c) for c in chunks], batch_first=True)
    res = kmeans_1d(vals, 2**bits, sample_weight=mask, n_init=n_init, generator=generator)
    books = _fp16(res.centroids).sort(1).values
    g = row_groups(w.shape[0], groups, device=w.device)
    idx = nearest_codeword(w, books[g])
    return idx, books


def scaled_codebook(w: torch.Tensor, bits: int, groups: int, *, n_init: int = 4,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(indices (R, M), codebook (2^b,), scales (G,))`` for ``Ŵ = s_g·C[I]`` (fp16-representable, scales > 0)."""
    g = row_groups(w.shape[0], groups, device=w.device)
    sq = torch.zeros(groups, dtype=w.dtype, device=w.device).index_add_(0, g, (w * w).sum(1))
    cnt = torch.zeros(groups, dtype=w.dtype, device=w.device).index_add_(
        0, g, torch.full((w.shape[0],), float(w.shape[1]), dtype=w.dtype, device=w.device))
    rms = (sq / cnt).sqrt()
    fallback = rms[rms > 0].max() if bool((rms > 0).any()) else torch.ones((), dtype=w.dtype, device=w.device)
    scales = _fp16(torch.where(rms > 0, rms, fallback))
    scales = torch.where(scales > 0, scales, torch.full_like(scales, 6.1e-5))  # fp16 underflow: smallest normal
    res = kmeans_1d((w / scales[g, None]).reshape(1, -1), 2**bits, n_init=n_init, generator=generator)
    book = _fp16(res.centroids[0]).sort().values
    idx = nearest_codeword(w, scales[g, None] * book[None, :])
    return idx, book, scales


def uniform_affine(w: torch.Tensor, bits: int, groups: int | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """``(indices (R, M), scales (G,), offsets (G,))`` of min–max uniform quantisation (``groups=None``: per row).

    Scale and offset are rounded to fp16 first and the indices computed with the rounded values; a constant
    group gets scale 1 (every index 0, the offset is the value).
    """
    groups = w.shape[0] if groups is None else groups
    g = row_groups(w.shape[0], groups, device=w.device)
    big = torch.finfo(w.dtype).max
    mn = torch.full((groups,), big, dtype=w.dtype, device=w.device).scatter_reduce_(0, g, w.amin(1), "amin")
    mx = torch.full((groups,), -big, dtype=w.dtype, device=w.device).scatter_reduce_(0, g, w.amax(1), "amax")
    levels = 2**bits - 1
    scale = _fp16((mx - mn) / levels)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    offset = _fp16(mn)
    idx = torch.round((w - offset[g, None]) / scale[g, None]).clamp(0, levels).to(torch.int64)
    return idx, scale, offset
