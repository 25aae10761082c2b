"""Fixtures shared by the optimizer tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def cpu_capturable(monkeypatch):
    """torch.optim's capturable device types plus the CPU, so that ``capturable=True`` (CUDA graphs) runs here:
    its checks and its tensor-op update are device-agnostic (see ``test_capturable.py`` for the host-read
    guard)."""
    import torch.optim.optimizer as torch_optimizer

    original = torch_optimizer._get_capturable_supported_devices
    monkeypatch.setattr(torch_optimizer, "_get_capturable_supported_devices",
                        lambda supports_xla=True: [*original(supports_xla), "cpu"])
