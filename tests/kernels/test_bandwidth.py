"""Bandwidth sweeps, cache-size discovery and the interleaved timer used by the two-pass softmax claim."""

import numpy as np
import pytest

from gradlab.kernels import cache_sizes, interleaved_times, last_level_cache, stream_read, stream_scale, \
    stream_scale_inplace


def test_sweeps_compute_what_they_say():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10_007).astype(np.float32)
    assert stream_read(x) == pytest.approx(float(x.astype(np.float64).sum()), abs=1e-3)
    y = np.empty_like(x)
    stream_scale(x, y, 0.5)
    np.testing.assert_array_equal(y, x * np.float32(0.5))
    stream_scale_inplace(y, 2.0)
    np.testing.assert_array_equal(y, x)


def test_sweeps_reject_bad_arrays():
    x = np.zeros(8, dtype=np.float32)
    with pytest.raises(TypeError, match="float32"):
        stream_read(x.astype(np.float64))
    with pytest.raises(TypeError, match="ndarray"):
        stream_read([0.0, 1.0])
    with pytest.raises(TypeError, match="1-D"):
        stream_scale_inplace(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        stream_scale(x, np.zeros(9, dtype=np.float32))


def test_cache_sizes_from_this_machine():
    sizes, source = cache_sizes()
    llc, llc_source = last_level_cache()
    assert llc > 0 and llc_source in ("sysfs", "lscpu", "default")
    if sizes:
        assert llc == sizes[max(sizes)] and source in ("sysfs", "lscpu")


def test_interleaved_times_rotates_and_records_both_clocks():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    t = interleaved_times(fns, rounds=3, repeats=2, warmup=False)
    assert calls == list("aabbcc") + list("bbccaa") + list("ccaabb")
    for clock in (t.cpu, t.wall):
        assert set(clock) == set("abc") and all(v.shape == (3,) and (v >= 0).all() for v in clock.values())
    assert t.median("a", "wall") >= 0
    with pytest.raises(ValueError, match="rounds"):
        interleaved_times(fns, rounds=0)
    with pytest.raises(ValueError, match="at least one"):
        interleaved_times({}, rounds=1)
