"""Bit-packing of codebook indices: ``b``-bit integers stored densely in a ``uint8`` byte stream.

A weight tensor compressed with a ``2^b``-entry codebook (JLCM, arXiv 2309.17361, and the baselines) stores one
``b``-bit index per weight. :func:`pack_indices` writes the indices as one little-endian bit stream: bit ``j`` of
index ``i`` is bit ``(i·b + j) mod 8`` of byte ``⌊(i·b + j)/8⌋``, so ``n`` indices take exactly

.. math:: \\lceil n b / 8 \\rceil \\text{ bytes}

for every ``b`` in 1…8 (no padding to a power of two: 3-bit indices cost 3 bits). Both directions are vectorised
over all indices (no Python loop over weights).
"""

from __future__ import annotations

import math

import torch

from gradlab.core.validation import check_int, check_tensor

__all__ = ["pack_indices", "packed_nbytes", "unpack_indices"]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that :func:`pack_indices` uses for ``numel`` indices of ``bits`` bits: ``ceil(numel·bits/8)``."""
    check_int("numel", numel, minimum=0)
    check_int("bits", bits, minimum=1, maximum=8)
    return math.ceil(numel * bits / 8)


def pack_indices(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer ``indices`` (any shape, values in ``[0, 2^bits)``) into a 1-D ``uint8`` tensor.

    Args:
        indices: integer tensor; it is flattened in row-major order.
        bits: index width ``b`` in 1…8.

    Returns:
        ``uint8`` tensor of :func:`packed_nbytes` ``(indices.numel(), bits)`` bytes on ``indices``' device.
    """
    check_int("bits", bits, minimum=1, maximum=8)
    check_tensor("indices", indices, dtype=_INT_DTYPES)
    flat = indices.reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2**bits):
        raise ValueError(f"indices must lie in [0, {2 ** bits - 1}] for bits={bits}; "
                         f"got values in [{int(flat.min())}, {int(flat.max())}]")
    flat = flat.to(torch.uint8)
    if bits == 8:
        return flat.clone()
    shifts = torch.arange(bits, dtype=torch.uint8, device=flat.device)
    stream = ((flat[:, None] >> shifts) & 1).reshape(-1)  # little-endian bits of each index, index after index
    pad = (-stream.numel()) % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    weights = (1 << torch.arange(8, device=flat.device, dtype=torch.int32))
    return (stream.view(-1, 8).to(torch.int32) * weights).sum(1).to(torch.uint8)


def unpack_indices(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_indices`: the first ``numel`` ``bits``-bit indices as a 1-D ``int64`` tensor.

    Raises ``ValueError`` unless ``packed`` holds exactly ``ceil(numel·bits/8)`` bytes.
    """
    check_int("bits", bits, minimum=1, maximum=8)
    check_int("numel", numel, minimum=0)
    check_tensor("packed", packed, ndim=1, dtype=torch.uint8)
    need = packed_nbytes(numel, bits)
    if packed.numel() != need:
        raise ValueError(f"packed must hold ceil(numel*bits/8) = {need} bytes for numel={numel}, bits={bits}; "
                         f"got {packed.numel()}")
    if bits == 8:
        return packed.to(torch.int64)
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    stream = ((packed[:, None] >> shifts) & 1).reshape(-1)[: numel * bits].view(numel, bits).to(torch.int64)
    weights = 1 << torch.arange(bits, device=packed.device, dtype=torch.int64)
    return (stream * weights).sum(1)
