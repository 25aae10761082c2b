"""The stored form of a codebook-quantised weight tensor and its exact memory accounting.

JLCM (arXiv 2309.17361) stores a weight tensor ``W`` (``R`` output neurons/channels, ``|W|`` entries) as ``b``-bit
indices into small fp16 tables. The output neurons are split into ``G`` contiguous groups of sizes
``⌈R/G⌉`` or ``⌊R/G⌋`` (``torch.tensor_split`` order: the first ``R mod G`` groups are one larger), so the group
boundaries follow from ``(R, G)`` and cost nothing. With ``g(r)`` the group of row ``r`` and ``I`` the indices:

* ``mode="codebooks"`` (one codebook per group): :math:`\\hat W_{r\\cdot} = C_{g(r)}[I_{r\\cdot}]`,
  :math:`\\text{bits/weight} = b + 16\\,G\\,2^b/|W|`;
* ``mode="scales"`` (one shared codebook, one fp16 scale per group):
  :math:`\\hat W_{r\\cdot} = s_{g(r)}\\,C[I_{r\\cdot}]`,
  :math:`\\text{bits/weight} = b + 16\\,(2^b + G)/|W|`;
* ``mode="affine"`` (uniform quantisation, integer levels ``0…2^b−1``, fp16 scale and offset per group):
  :math:`\\hat W_{r\\cdot} = s_{g(r)}\\,I_{r\\cdot} + z_{g(r)}`, :math:`\\text{bits/weight} = b + 32\\,G/|W|`.

:class:`CompressedWeight` holds exactly these tensors (indices bit-packed by
:mod:`gradlab.compression.packing`, tables in fp16); its :attr:`~CompressedWeight.nbytes` is the sum of their
sizes, ``ceil(b·|W|/8) + 2·(#fp16 values)``, which :func:`storage_bytes_formula` states in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradlab.compression.packing import pack_indices, packed_nbytes, unpack_indices
from gradlab.core.validation import check_choice, check_int, check_tensor

__all__ = ["MODES", "CompressedWeight", "bits_per_weight_formula", "group_sizes", "row_groups",
           "storage_bytes_formula"]

MODES: tuple[str, ...] = ("codebooks", "scales", "affine")


def group_sizes(rows: int, groups: int) -> list[int]:
    """Sizes of the ``groups`` contiguous row groups of ``rows`` rows (``torch.tensor_split`` order)."""
    check_int("rows", rows, minimum=1)
    check_int("groups", groups, minimum=1, maximum=rows)
    q, r = divmod(rows, groups)
    return [q + 1] * r + [q] * (groups - r)


def row_groups(rows: int, groups: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(rows,)`` int64 tensor: the group of each row under :func:`group_sizes`."""
    sizes = torch.tensor(group_sizes(rows, groups), device=device)
    return torch.repeat_interleave(torch.arange(groups, device=device), sizes)


def _n_fp16(mode: str, bits: int, groups: int) -> int:
    k = 2**bits
    return {"codebooks": groups * k, "scales": k + groups, "affine": 2 * groups}[mode]


def storage_bytes_formula(bits: int, groups: int, numel: int, mode: str = "codebooks") -> int:
    """Closed-form storage of one tensor: ``ceil(b·|W|/8)`` index bytes plus 2 bytes per fp16 table value."""
    check_int("bits", bits, minimum=1, maximum=8)
    check_int("groups", groups, minimum=1)
    check_int("numel", numel, minimum=1)
    check_choice("mode", mode, MODES)
    return packed_nbytes(numel, bits) + 2 * _n_fp16(mode, bits, groups)


def bits_per_weight_formula(bits: int, groups: int, numel: int, mode: str = "codebooks") -> float:
    """The paper-style rate without byte rounding: ``b + 16·(#fp16 values)/|W|`` (e.g. ``b + 16·G·2^b/|W|``)."""
    check_int("bits", bits, minimum=1, maximum=8)
    check_int("groups", groups, minimum=1)
    check_int("numel", numel, minimum=1)
    check_choice("mode", mode, MODES)
    return bits + 16 * _n_fp16(mode, bits, groups) / numel


@dataclass(frozen=True)
class CompressedWeight:
    """A weight tensor as stored: packed ``b``-bit indices and fp16 tables (see the module docstring).

    Build one with :meth:`from_indices`; :meth:`decode` rebuilds :math:`\\hat W`.

    Attributes:
        shape: the weight's shape ``(R, ...)``; rows are output neurons/channels.
        bits: index width ``b``.
        groups: number of contiguous row groups ``G``.
        mode: ``"codebooks"``, ``"scales"`` or ``"affine"``.
        packed: ``uint8`` packed indices (row-major over ``shape``).
        codebooks: fp16 ``(G, 2^b)`` (``codebooks``), ``(1, 2^b)`` (``scales``) or ``None`` (``affine``).
        scales: fp16 ``(G,)`` or ``None`` (``codebooks``).
        offsets: fp16 ``(G,)`` (``affine``) or ``None``.
    """

    shape: tuple[int, ...]
    bits: int
    groups: int
    mode: str
    packed: torch.Tensor
    codebooks: torch.Tensor | None
    scales: torch.Tensor | None
    offsets: torch.Tensor | None

    @classmethod
    def from_indices(cls, indices: torch.Tensor, bits: int, mode: str, *, codebooks: torch.Tensor | None = None,
                     scales: torch.Tensor | None = None, offsets: torch.Tensor | None = None) -> "CompressedWeight":
        """Pack ``indices`` (shaped like the weight) and store the tables in fp16.

        Raises ``ValueError`` when the tables do not match ``mode`` (shapes in the class docstring).
        """
        check_int("bits", bits, minimum=1, maximum=8)
        check_choice("mode", mode, MODES)
        check_tensor("indices", indices)
        if indices.ndim < 1 or indices.numel() == 0:
            raise ValueError(f"indices must be a non-empty tensor shaped like the weight; got {tuple(indices.shape)}")
        k = 2**bits
        groups = None
        for name, t in (("codebooks", codebooks), ("scales", scales), ("offsets", offsets)):
            if t is not None:
                check_tensor(name, t, floating=True, finite=True)
        if mode == "codebooks":
            if codebooks is None or codebooks.ndim != 2 or codebooks.shape[1] != k or scales is not None \
                    or offsets is not None:
                raise ValueError(f"mode='codebooks' needs codebooks of shape (G, {k}) and no scales/offsets")
            groups = codebooks.shape[0]
        elif mode == "scales":
            if codebooks is None or tuple(codebooks.shape) not in ((k,), (1, k)) or scales is None \
                    or scales.ndim != 1 or offsets is not None:
                raise ValueError(f"mode='scales' needs a shared codebook of shape ({k},) and scales of shape (G,)")
            groups = scales.shape[0]
            codebooks = codebooks.reshape(1, k)
        else:
            if codebooks is not None or scales is None or offsets is None or scales.ndim != 1 \
                    or offsets.shape != scales.shape:
                raise ValueError("mode='affine' needs scales and offsets of shape (G,) and no codebooks")
            groups = scales.shape[0]
        check_int("groups", groups, minimum=1, maximum=indices.shape[0])
        half = lambda t: None if t is None else t.detach().to(torch.float16).contiguous()  # noqa: E731
        return cls(shape=tuple(indices.shape), bits=bits, groups=groups, mode=mode,
                   packed=pack_indices(indices, bits), codebooks=half(codebooks), scales=half(scales),
                   offsets=half(offsets))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def indices(self) -> torch.Tensor:
        """The unpacked ``int64`` indices, shaped like the weight."""
        return unpack_indices(self.packed, self.bits, self.numel).view(self.shape)

    def decode(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """:math:`\\hat W` in ``dtype``, computed from the stored fp16 tables and the unpacked indices."""
        rows = self.shape[0]
        idx = self.indices().reshape(rows, -1)
        g = row_groups(rows, self.groups, device=idx.device)
        if self.mode == "affine":
            vals = idx.to(dtype)
        elif self.codebooks.shape[0] == 1:
            vals = self.codebooks[0].to(dtype)[idx]
        else:
            vals = torch.gather(self.codebooks.to(dtype)[g], 1, idx)
        if self.scales is not None:
            vals = vals * self.scales.to(dtype)[g, None]
        if self.offsets is not None:
            vals = vals + self.offsets.to(dtype)[g, None]
        return vals.reshape(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes actually stored, packed indices plus the fp16 tables."""
        return sum(t.numel() * t.element_size() for t in (self.packed, self.codebooks, self.scales, self.offsets)
                   if t is not None)

    @property
    def bits_per_weight(self) -> float:
        """``8·nbytes / |W|``."""
        return 8 * self.nbytes / self.numel

    def to(self, device: torch.device | str) -> "CompressedWeight":
        """A copy with every stored tensor on ``device``."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return CompressedWeight(self.shape, self.bits, self.groups, self.mode, mv(self.packed), mv(self.codebooks),
                                mv(self.scales), mv(self.offsets))
