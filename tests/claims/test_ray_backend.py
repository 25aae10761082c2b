"""The Ray backend for real: a local ray.init, claims as Ray tasks, the driver writing the store."""

import pytest

from tests.fixtures.cli_helpers import gradlab_cli

ray = pytest.importorskip("ray", reason="the test extra installs ray; this guards only partial installs")

EXPECTED = {"demo/passes": "passed", "demo/fails": "failed", "demo/raises": "error", "demo/sleeps": "timeout",
            "demo/dies": "error"}


@pytest.mark.ray
def test_ray_backend_matches_local(demo_env):
    from gradlab.claims.store import ResultStore

    env = dict(demo_env["env"], RAY_USAGE_STATS_ENABLED="0")
    out = gradlab_cli("reproduce", "--only", "demo", "--scale", "smoke", "--backend", "ray", "--workers", "2",
                      "--store", str(demo_env["store"]), "--out", str(demo_env["out"]), env=env, timeout=600)
    assert out.returncode == 3, out.stdout + out.stderr  # demo claims crash by design
    rows = list(ResultStore(demo_env["store"]).rows())
    assert {r.claim_id: r.status for r in rows} == EXPECTED
    assert all(r.backend == "ray" for r in rows)
    passed = next(r for r in rows if r.claim_id == "demo/passes")
    assert passed.figures and passed.metrics["n"] == 100
