"""Bit-packing of codebook indices: hand-checked bytes, round trips (hypothesis), exact byte counts, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.compression import pack_indices, packed_nbytes, unpack_indices


def test_two_bit_bytes_by_hand():
    # little-endian bit stream: indices 1, 2, 3, 0 -> bits 10 01 11 00 -> byte 0b00111001 = 57
    packed = pack_indices(torch.tensor([1, 2, 3, 0]), 2)
    assert packed.dtype == torch.uint8 and packed.tolist() == [0b00111001]


def test_three_bit_crosses_bytes_by_hand():
    # 5 = 101, 6 = 011 (little-endian 1,0,1 and 0,1,1), 7 = 111: stream 101 011 111 + pad -> bytes
    packed = pack_indices(torch.tensor([5, 6, 7]), 3)
    stream = [1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    expected = [sum(b << i for i, b in enumerate(stream[j:j + 8])) for j in (0, 8)]
    assert packed.tolist() == expected


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(0, 300), seed=st.integers(0, 2**16))
def test_round_trip_and_size(bits, n, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 2**bits, (n,), generator=g)
    packed = pack_indices(idx, bits)
    assert packed.numel() == math.ceil(n * bits / 8) == packed_nbytes(n, bits)
    assert torch.equal(unpack_indices(packed, bits, n), idx)


def test_multidimensional_input_is_row_major():
    idx = torch.arange(16).view(4, 4) % 4
    assert torch.equal(unpack_indices(pack_indices(idx, 2), 2, 16).view(4, 4), idx)


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits"):
        pack_indices(torch.tensor([0]), bits)
    with pytest.raises(ValueError, match="bits"):
        unpack_indices(torch.zeros(1, dtype=torch.uint8), bits, 1)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        pack_indices(torch.tensor([4]), 2)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        pack_indices(torch.tensor([-1]), 2)
    with pytest.raises(TypeError, match="indices"):
        pack_indices(torch.tensor([0.5]), 2)
    with pytest.raises(TypeError, match="bits"):
        pack_indices(torch.tensor([0]), 2.0)
    with pytest.raises(ValueError, match="packed must hold"):
        unpack_indices(torch.zeros(3, dtype=torch.uint8), 2, 4)
    with pytest.raises(TypeError, match="packed"):
        unpack_indices(torch.zeros(1, dtype=torch.int32), 2, 4)
