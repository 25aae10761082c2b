import pytest


@pytest.fixture(autouse=True)
def _bench_store_in_tmp(tmp_path, monkeypatch):
    """``gradlab bench`` without ``--store`` writes to a temporary store, never the checkout's .gradlab/."""
    import gradlab.bench.command as command

    monkeypatch.setattr(command, "DEFAULT_STORE", tmp_path / "default-store.sqlite")
