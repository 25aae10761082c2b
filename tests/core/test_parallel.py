import math
import os

import pytest

from gradlab.core.parallel import chunks, local_map, make_map, ray_map, sequential_map

ITEMS = list(range(12))


def test_local_map_equals_sequential():
    assert local_map(2)(math.factorial, ITEMS) == sequential_map(math.factorial, ITEMS)
    assert make_map("local", 1)(math.factorial, ITEMS) == [math.factorial(i) for i in ITEMS]


def _worker_pid_and_threads(_: int) -> tuple[int, int]:
    import torch

    return os.getpid(), torch.get_num_threads()


def test_local_map_reuses_one_pool_of_single_thread_workers():
    first = local_map(2)(_worker_pid_and_threads, range(8))
    second = local_map(2)(_worker_pid_and_threads, range(8))
    pids_first, pids_second = {p for p, _ in first}, {p for p, _ in second}
    assert os.getpid() not in pids_first
    assert pids_second <= pids_first  # the second call ran in the processes the first one started
    assert {t for _, t in first + second} == {1}


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


def test_library_logging_is_silent_by_default():
    import logging

    import gradlab

    handlers = logging.getLogger("gradlab").handlers
    assert gradlab.__version__ and any(isinstance(h, logging.NullHandler) for h in handlers)


def test_unordered_map_cpus_per_item_sets_threads_per_item():
    import torch

    from gradlab.core.parallel import make_unordered_map

    before = torch.get_num_threads()
    seq = dict(make_unordered_map("sequential", cpus_per_item=2)(_worker_pid_and_threads, range(3)))
    assert {t for _, t in seq.values()} == {2} and torch.get_num_threads() == before  # restored
    par = dict(make_unordered_map("local", 2, cpus_per_item=2)(_worker_pid_and_threads, range(4)))
    assert sorted(par) == [0, 1, 2, 3] and {t for _, t in par.values()} == {2}
    assert os.getpid() not in {p for p, _ in par.values()}
    # the pool's workers are back at one thread for the next caller
    assert {t for _, t in local_map(2)(_worker_pid_and_threads, range(4))} == {1}


def test_unordered_map_refuses_bad_cpus_per_item():
    from gradlab.core.parallel import make_unordered_map

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="cpus_per_item"):
            make_unordered_map("local", 2, cpus_per_item=bad)
    with pytest.raises(ValueError, match="cpus_per_item .*exceeds"):
        make_unordered_map("ray", 2, cpus_per_item=3)
