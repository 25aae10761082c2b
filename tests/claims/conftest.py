"""Fixtures for the framework tests: the demo papers module and an isolated store."""

import os
import sys
from pathlib import Path

import pytest

from tests.fixtures.cli_helpers import ROOT


@pytest.fixture
def demo_env(tmp_path, monkeypatch):
    """Environment that registers tests/fixtures/demo_papers.py and counts claim executions in tmp_path/marks."""
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {
        "GRADLAB_EXTRA_PAPERS": "tests.fixtures.demo_papers",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "GRADLAB_DEMO_MARKER": str(marks),
        "GRADLAB_DEMO_SLEEP": "60",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if str(ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT))
    return {"env": {**os.environ, **env}, "marks": marks, "store": tmp_path / "store" / "results.sqlite",
            "out": tmp_path / "report"}


