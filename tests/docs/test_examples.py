"""Every script in examples/ runs (in a fresh process, one thread, an empty working directory) and writes what it
says it writes, so the examples never rot."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# script -> files it must write into its working directory (and a line its output must contain)
EXPECTED = {
    "lion_scheduler_checkpoint.py": (("checkpoint_lion.pt", "checkpoint_diffgrad.pt"),
                                     "resumed run identical to uninterrupted run: True"),
    "coordinate_clip_sgd.py": ((), "SGD + coordinate_clip final loss"),
    "explain_gradcampp_ig.py": (("explanations.png",), "IntegratedGradients"),
    "hessian_spectrum.py": (("hessian_density.png",), "top-3 eigenvalues (dense)"),
    "mup_param_groups.py": (("coord_check.png",), "mup  width exponent"),
    "run_claim_from_python.py": (("diffgrad_trajectories.png",), "criterion:"),
    "bench_own_submission.py": (("bench-out/BENCH.md", "bench-out/profile.png", "bench-out/results.json"),
                                "gradlab bench exit code 0"),
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files, line = EXPECTED[script]
    assert line in proc.stdout, proc.stdout
    for name in files:
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, f"{script} did not write {name}"
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
