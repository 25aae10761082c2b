"""Exact memory accounting: stored bytes equal the closed form; decode rebuilds the weights from fp16 tables."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.compression import (
    CompressedWeight,
    bits_per_weight_formula,
    group_sizes,
    row_groups,
    storage_bytes_formula,
)


def test_group_sizes_follow_tensor_split():
    for rows, groups in ((10, 3), (16, 8), (7, 7), (5, 1)):
        expect = [len(c) for c in torch.tensor_split(torch.arange(rows), groups)]
        assert group_sizes(rows, groups) == expect
        assert row_groups(rows, groups).tolist() == [g for g, n in enumerate(expect) for _ in range(n)]


def test_paper_example_256x256_b2_g8():
    assert bits_per_weight_formula(2, 8, 256 * 256) == pytest.approx(2 + 16 * 8 * 4 / 65536) == pytest.approx(2.0078125)
    assert storage_bytes_formula(2, 8, 256 * 256) == 65536 * 2 // 8 + 2 * 8 * 4


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 20), cols=st.integers(1, 20), data=st.data())
def test_bytes_equal_formula_every_mode(bits, rows, cols, data):
    groups = data.draw(st.integers(1, rows))
    k = 2**bits
    g = torch.Generator().manual_seed(rows * 31 + cols)
    idx = torch.randint(0, k, (rows, cols), generator=g)
    cws = {
        "codebooks": CompressedWeight.from_indices(idx, bits, "codebooks", codebooks=torch.randn(groups, k)),
        "scales": CompressedWeight.from_indices(idx, bits, "scales", codebooks=torch.randn(k),
                                                scales=torch.rand(groups) + 0.1),
        "affine": CompressedWeight.from_indices(idx, bits, "affine", scales=torch.rand(groups),
                                                offsets=torch.randn(groups)),
    }
    n = rows * cols
    for mode, cw in cws.items():
        assert cw.nbytes == storage_bytes_formula(bits, groups, n, mode) == \
            math.ceil(n * bits / 8) + 2 * {"codebooks": groups * k, "scales": k + groups, "affine": 2 * groups}[mode]
        if (n * bits) % 8 == 0:
            assert cw.bits_per_weight == pytest.approx(bits_per_weight_formula(bits, groups, n, mode), rel=1e-12)
        assert torch.equal(cw.indices(), idx)


def test_decode_by_hand():
    idx = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 0, 0]])
    books = torch.tensor([[-1.0, -0.5, 0.5, 1.0], [-2.0, 0.0, 0.25, 4.0]])
    cw = CompressedWeight.from_indices(idx, 2, "codebooks", codebooks=books)  # rows 0, 1 -> group 0; row 2 -> 1
    expect = torch.tensor([[-1.0, -0.5, 0.5, 1.0], [1.0, 0.5, -0.5, -1.0], [0.0, 0.0, -2.0, -2.0]])
    assert torch.equal(cw.decode(), expect)
    cs = CompressedWeight.from_indices(idx, 2, "scales", codebooks=books[0], scales=torch.tensor([2.0, 0.5]))
    assert torch.equal(cs.decode(), torch.tensor([[-2.0, -1, 1, 2], [2, 1, -1, -2], [-0.25, -0.25, -0.5, -0.5]]))
    ca = CompressedWeight.from_indices(idx, 2, "affine", scales=torch.tensor([0.5, 1.0]),
                                       offsets=torch.tensor([-1.0, 0.0]))
    assert torch.equal(ca.decode(), torch.tensor([[-1.0, -0.5, 0, 0.5], [0.5, 0, -0.5, -1], [1, 1, 0, 0]]))


def test_tables_are_stored_in_fp16():
    cw = CompressedWeight.from_indices(torch.zeros(2, 3, dtype=torch.int64), 1, "codebooks",
                                       codebooks=torch.tensor([[0.1, 0.2]]))
    assert cw.codebooks.dtype == torch.float16
    assert cw.decode(torch.float64)[0, 0].item() == torch.tensor(0.1).half().double().item()


def test_conv_shape_round_trip():
    idx = torch.randint(0, 8, (4, 3, 3, 3))
    cw = CompressedWeight.from_indices(idx, 3, "codebooks", codebooks=torch.randn(2, 8))
    assert cw.decode().shape == (4, 3, 3, 3) and torch.equal(cw.indices(), idx)


def test_bad_input():
    idx = torch.zeros(4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="mode must be one of"):
        CompressedWeight.from_indices(idx, 2, "nope", codebooks=torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"shape \(G, 4\)"):
        CompressedWeight.from_indices(idx, 2, "codebooks", codebooks=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="groups must be <= 4"):
        CompressedWeight.from_indices(idx, 2, "codebooks", codebooks=torch.zeros(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        CompressedWeight.from_indices(idx, 2, "codebooks", codebooks=torch.full((1, 4), float("nan")))
    with pytest.raises(ValueError, match="bits must be <= 8"):
        storage_bytes_formula(9, 1, 10)
    with pytest.raises(ValueError, match="groups must be <= 3"):
        group_sizes(3, 4)
