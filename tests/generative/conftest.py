"""Shared fixtures of the generative tests: a network guard and the cached smoke-scale tiny model and judge.

The guard patches ``socket`` for the whole session: any connection to (or name lookup of) a non-local host is
recorded and raises, and every test fails afterwards if one was attempted, even when the library swallowed the
error (huggingface_hub falls back to its cache on connection errors, which would hide a hub request).
"""

from __future__ import annotations

import socket

import pytest
import torch

torch.set_num_threads(1)

_ATTEMPTS: list[str] = []
_LOCAL = {None, "", "localhost", "127.0.0.1", "::1"}


class NetworkAccessError(RuntimeError):
    """Raised by the guard when test code tries to reach the network."""


def _guarded_connect(original):
    def connect(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if host not in _LOCAL:
                _ATTEMPTS.append(f"connect {address!r}")
                raise NetworkAccessError(f"network access in a test: connect to {address!r}")
        return original(self, address, *args, **kwargs)
    return connect


def _guarded_getaddrinfo(original):
    def getaddrinfo(host, *args, **kwargs):
        h = host.decode() if isinstance(host, bytes) else host
        if h not in _LOCAL:
            _ATTEMPTS.append(f"getaddrinfo {host!r}")
            raise NetworkAccessError(f"network access in a test: name lookup of {host!r}")
        return original(host, *args, **kwargs)
    return getaddrinfo


@pytest.fixture(scope="session", autouse=True)
def _network_guard():
    saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)
    socket.socket.connect = _guarded_connect(saved[0])
    socket.socket.connect_ex = _guarded_connect(saved[1])
    socket.getaddrinfo = _guarded_getaddrinfo(saved[2])
    try:
        yield _ATTEMPTS
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = saved


@pytest.fixture(autouse=True)
def _no_network_in_test(_network_guard):
    start = len(_network_guard)
    yield
    attempts = _network_guard[start:]
    if attempts:
        pytest.fail(f"test tried to reach the network: {attempts}")


@pytest.fixture(scope="session")
def generative_cache(tmp_path_factory):
    """One cache directory for the session's trained tiny artifacts."""
    return tmp_path_factory.mktemp("gradlab-cache")


@pytest.fixture(scope="session")
def tiny_t2i_smoke(generative_cache):
    """The smoke-scale (20 training steps) tiny text-to-image model, trained once per session."""
    from gradlab.generative.tiny import load_tiny_t2i

    return load_tiny_t2i("smoke", cache_dir=generative_cache)


@pytest.fixture(scope="session")
def shape_judge_smoke(generative_cache):
    """The smoke-scale shape judge, trained once per session."""
    from gradlab.generative.judge import load_shape_judge

    return load_shape_judge("smoke", cache_dir=generative_cache)
