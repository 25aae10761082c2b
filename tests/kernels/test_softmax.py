"""The softmax kernels of arXiv 2001.04438 against a float64 numpy softmax, plus edge cases and bad input."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradlab.kernels import softmax as sm
from gradlab.kernels import softmax_three_pass_recompute, softmax_three_pass_reload, softmax_two_pass

KERNELS = {
    "two_pass": softmax_two_pass,
    "recompute": softmax_three_pass_recompute,
    "reload": softmax_three_pass_reload,
}
TINY = 3e-38  # results below the smallest normal float32 (1.2e-38) are flushed to zero by design


def reference(x: np.ndarray) -> np.ndarray:
    """float64 softmax over the last axis (max-subtracted), independent of the kernels."""
    z = x.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def assert_close(y: np.ndarray, ref: np.ndarray, rtol: float = 1e-5) -> None:
    err = np.abs(y.astype(np.float64) - ref)
    bad = err > rtol * ref + TINY
    assert not bad.any(), f"max rel err {np.max(err / np.maximum(ref, TINY)):.3g} at {np.argwhere(bad)[:3].tolist()}"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("sigma", [1.0, 30.0, 300.0])
@pytest.mark.parametrize("n", [1, 7, 32, 33, 1000, 4099])
def test_matches_float64_reference(kernel, sigma, n):
    rng = np.random.default_rng(n + int(sigma))
    x = (rng.standard_normal((3, n)) * sigma).astype(np.float32)
    x[0, n // 2] = 150.0  # an outlier
    y = KERNELS[kernel](x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert_close(y, reference(x))
    np.testing.assert_allclose(y.sum(axis=1, dtype=np.float64), 1.0, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_finite_and_accurate_to_1e4(kernel):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1e4, 1e4, (4, 5000)).astype(np.float32)
    x[1] = rng.uniform(9990.0, 1e4, 5000)  # all large: no overflow without max subtraction
    x[2] = rng.uniform(-1e4, -9990.0, 5000)  # all very negative: no underflow of the whole row
    y = KERNELS[kernel](x)
    assert np.isfinite(y).all()
    assert_close(y, reference(x))


@pytest.mark.parametrize("kernel", KERNELS)
def test_extreme_finite_values(kernel):
    """Finite inputs up to 1e38 in magnitude (the two-pass kernel supports |x| < ~2e38) give finite results."""
    x = np.array([[1e38, -1e38, 0.0], [1e30, 1e30, -1e30], [-1e37, -1e37, -1e37]], dtype=np.float32)
    y = KERNELS[kernel](x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, reference(x), atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_special_values(kernel):
    x = np.array([
        [0.0, -np.inf, 1.0, 2.0],
        [np.nan, 0.0, 1.0, 2.0],
        [np.inf, 0.0, 1.0, 2.0],
        [-np.inf] * 4,
        [5.0, 5.0, 5.0, 5.0],
    ], dtype=np.float32)
    y = KERNELS[kernel](x)
    assert y[0, 1] == 0.0
    assert_close(y[0:1], reference(x[0:1]))
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all() and np.isnan(y[3]).all()
    np.testing.assert_allclose(y[4], 0.25, rtol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_rows_equal_vectors_and_torch_io(kernel):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 77)) * 10).astype(np.float32)
    f = KERNELS[kernel]
    rows = f(x)
    for i in range(5):
        np.testing.assert_array_equal(rows[i], f(x[i]))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = f(xt)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32 and yt.shape == xt.shape
    np.testing.assert_array_equal(yt.numpy(), rows)
    np.testing.assert_allclose(yt.numpy(), torch.softmax(xt.detach().double(), -1).numpy(), rtol=1e-5, atol=1e-37)


@pytest.mark.parametrize("kernel", KERNELS)
def test_out_argument(kernel):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 50)) * 5).astype(np.float32)
    f = KERNELS[kernel]
    expected = f(x)
    out = np.full_like(x, -1.0)
    assert f(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    inplace = x.copy()
    assert f(inplace, out=inplace) is inplace  # out may be x itself
    np.testing.assert_array_equal(inplace, expected)
    xt, ot = torch.from_numpy(x), torch.empty(4, 50)
    assert f(xt, out=ot) is ot
    np.testing.assert_array_equal(ot.numpy(), expected)
    strided = x[:, ::2]  # non-contiguous input is copied
    np.testing.assert_array_equal(f(strided), f(np.ascontiguousarray(strided)))


@pytest.mark.parametrize("kernel", KERNELS)
def test_bad_input(kernel):
    f = KERNELS[kernel]
    x = np.zeros((2, 8), dtype=np.float32)
    with pytest.raises(TypeError, match="float32"):
        f(x.astype(np.float64))
    with pytest.raises(TypeError, match="float32"):
        f(torch.zeros(2, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32"):
        f(np.zeros((2, 8), dtype=np.int32))
    with pytest.raises(TypeError, match="ndarray or a torch.Tensor"):
        f([[0.0, 1.0]])
    with pytest.raises(ValueError, match="1 or 2 dimensions"):
        f(np.zeros((2, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one element"):
        f(np.zeros((3, 0), dtype=np.float32))
    with pytest.raises(ValueError, match="CPU"):
        f(torch.zeros(2, 8, device="meta"))
    with pytest.raises(ValueError, match="shape"):
        f(x, out=np.zeros((2, 9), dtype=np.float32))
    with pytest.raises(TypeError, match="float32"):
        f(x, out=np.zeros((2, 8), dtype=np.float64))
    with pytest.raises(TypeError, match="like x"):
        f(x, out=torch.zeros(2, 8))
    with pytest.raises(ValueError, match="C-contiguous"):
        f(x, out=np.zeros((8, 2), dtype=np.float32).T)
    big = np.zeros(17, dtype=np.float32)
    with pytest.raises(ValueError, match="overlap"):
        f(big[:16], out=big[1:])
    assert f(np.zeros((0, 5), dtype=np.float32)).shape == (0, 5)


def test_missing_numba_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "gradlab.kernels._softmax_numba", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # as if numba were not installed
    with pytest.raises(ImportError, match="kernels"):
        softmax_two_pass(np.zeros(4, dtype=np.float32))


def test_docstring_states_bytes_per_element():
    doc = sm.__doc__
    for numbers in ("12", "16", "20", "24"):
        assert numbers in doc
    assert sm.KERNEL_BYTES_PER_ELEMENT == {"two_pass": (12, 16), "three_pass_recompute": (16, 20),
                                          "three_pass_reload": (20, 24)}


def test_hot_loops_are_vectorised():
    """Recompile the kernels (cached code cannot be inspected) and count vectorised range reductions in the IR.

    Every exponential loop (two in the two-pass and recomputing kernels, one in the reloading kernel) must call
    the vector form of ``llvm.floor``; the read sweep must add float vectors.
    """
    numba = pytest.importorskip("numba")
    from gradlab.kernels import _softmax_numba as K

    def jit(fn):
        return numba.njit(**{k: v for k, v in fn.targetoptions.items() if k not in ("cache", "nopython")})(fn.py_func)

    x = np.zeros((1, 64), dtype=np.float32)
    for fn, exp_loops in ((K.two_pass_rows, 2), (K.three_pass_recompute_rows, 2), (K.three_pass_reload_rows, 1)):
        jitted = jit(fn)
        jitted(x, x.copy(), K.LANES)
        ir = jitted.inspect_llvm(jitted.signatures[0])
        vector_floors = len(re.findall(r"call [^\n]*@llvm\.floor\.v\d+f32", ir))
        assert vector_floors >= exp_loops, f"{fn.__name__}: {vector_floors} vectorised exp loops, need {exp_loops}"
    jitted = jit(K.read_sum)
    jitted(np.zeros(64, dtype=np.float32))
    assert re.search(r"fadd [^\n]*<\d+ x float>", jitted.inspect_llvm(jitted.signatures[0]))


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=70),
                    elements=st.floats(-1e4, 1e4, width=32)),
       kernel=st.sampled_from(sorted(KERNELS)))
def test_property_matches_reference(x, kernel):
    y = KERNELS[kernel](x)
    assert y.shape == x.shape and np.isfinite(y).all()
    assert_close(y, reference(x))


@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from([np.float16, np.float64, np.int64, np.int8, np.complex64, np.bool_]),
       kernel=st.sampled_from(sorted(KERNELS)))
def test_property_non_float32_raises(dtype, kernel):
    with pytest.raises(TypeError, match="float32"):
        KERNELS[kernel](np.zeros((2, 3), dtype=dtype))
