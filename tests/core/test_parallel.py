import math

import pytest

from gradlab.core.parallel import chunks, local_map, make_map, ray_map, sequential_map

ITEMS = list(range(12))


def test_local_map_equals_sequential():
    assert local_map(2)(math.factorial, ITEMS) == sequential_map(math.factorial, ITEMS)
    assert make_map("local", 1)(math.factorial, ITEMS) == [math.factorial(i) for i in ITEMS]


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        make_map("mpi")
    with pytest.raises(ValueError, match="workers"):
        local_map(0)
    with pytest.raises(ValueError, match="workers"):
        ray_map(workers=-1)
    with pytest.raises(ValueError, match="size"):
        chunks([1, 2], 0)
    assert chunks([1, 2, 3], 2) == [[1, 2], [3]]


@pytest.mark.ray
def test_ray_map_equals_sequential():
    ray = pytest.importorskip("ray")
    try:
        assert ray_map(workers=2)(math.factorial, ITEMS) == sequential_map(math.factorial, ITEMS)
    finally:
        ray.shutdown()
