"""The console script through subprocess: list, reproduce (bad input and a real run), report."""

from tests.fixtures.cli_helpers import gradlab_cli


def test_list_shows_all_papers_and_status(demo_env):
    env = {k: v for k, v in demo_env["env"].items() if k != "GRADLAB_EXTRA_PAPERS"}
    out = gradlab_cli("list", env={**env, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    for key in ("diffgrad", "lion", "yolov9", "two-pass-softmax", "which-explanation"):
        assert key in out.stdout
    assert "39 seed papers" in out.stdout
    assert "implemented" in out.stdout


def test_unknown_key_exits_2_naming_valid_keys(demo_env):
    out = gradlab_cli("reproduce", "--only", "nosuchpaper", "--store", str(demo_env["store"]), env=demo_env["env"])
    assert out.returncode == 2
    assert "nosuchpaper" in out.stderr and "Valid keys" in out.stderr and "diffgrad" in out.stderr


def test_bad_scale_workers_and_address_exit_2(demo_env):
    for args in (["--scale", "huge"], ["--workers", "0"], ["--seed", "-1"], ["--address", "x:1"]):
        out = gradlab_cli("reproduce", *args, "--store", str(demo_env["store"]), env=demo_env["env"])
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert out.stderr.strip()


def test_reproduce_then_report(demo_env):
    common = ["--store", str(demo_env["store"]), "--out", str(demo_env["out"])]
    out = gradlab_cli("--verbose", "reproduce", "--only", "demo", "--scale", "smoke", "--workers", "2", *common,
                      env=demo_env["env"])
    assert out.returncode == 3, out.stdout + out.stderr  # demo has crashing claims by design (exit 3)
    assert "gradlab.claims.runner INFO: demo/" in out.stderr  # --verbose routes the library's log to stderr
    for status in ("passed", "failed", "error", "timeout"):
        assert status in out.stdout
    assert (demo_env["out"] / "index.html").exists() and (demo_env["out"] / "REPORT.md").exists()
    (demo_env["out"] / "index.html").unlink()
    rep = gradlab_cli("report", *common, env=demo_env["env"])
    assert rep.returncode == 0, rep.stderr
    assert "INFO" not in rep.stderr  # silent by default
    assert (demo_env["out"] / "index.html").exists()


def test_reproduce_exits_0_when_all_selected_claims_pass(demo_env):
    # Only papers without claims selected: nothing runs, nothing fails.
    env = {**demo_env["env"], "GRADLAB_EXTRA_PAPERS": "tests.fixtures.demo_papers,tests.fixtures.unimplemented_papers"}
    out = gradlab_cli("reproduce", "--only", "demo-unimplemented", "--scale", "smoke", "--store",
                      str(demo_env["store"]), "--out", str(demo_env["out"]), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "not implemented" in out.stdout


def test_user_errors_are_one_line_and_exit_2(demo_env, tmp_path):
    import sqlite3

    afile = tmp_path / "afile.txt"
    afile.write_text("not a store")
    newer = tmp_path / "newer.sqlite"
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version = 99")
    con.execute("CREATE TABLE results (x)")
    con.commit()
    con.close()
    store = str(demo_env["store"])
    cases = [
        ("reproduce", "--only", "demo", "--scale", "smoke", "--out", str(afile), "--store", store),
        ("reproduce", "--only", "demo", "--scale", "smoke", "--store", str(afile)),
        ("reproduce", "--only", "demo", "--scale", "smoke", "--store", str(tmp_path)),
        ("reproduce", "--only", "demo", "--scale", "smoke", "--store", str(afile / "s.sqlite")),
        ("reproduce", "--only", "demo", "--scale", "smoke", "--store", str(newer)),
        ("reproduce", "--only", "", "--scale", "smoke", "--store", store),
        ("reproduce", "--only", " , ", "--scale", "smoke", "--store", store),
        ("report", "--store", str(tmp_path / "missing.sqlite"), "--out", str(tmp_path / "r")),
        ("report", "--store", str(afile), "--out", str(tmp_path / "r")),
    ]
    for args in cases:
        out = gradlab_cli(*args, env=demo_env["env"])
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr + out.stdout, args
        assert len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
    assert not (tmp_path / "missing.sqlite").exists()
    assert not list(demo_env["marks"].iterdir()), "a claim ran before a user error was noticed"


def test_version_and_python_m(demo_env):
    import subprocess
    import sys

    from gradlab import __version__

    out = gradlab_cli("--version", env=demo_env["env"])
    assert out.returncode == 0 and __version__ in out.stdout
    mod = subprocess.run([sys.executable, "-m", "gradlab", "--version"], capture_output=True, text=True,
                         env=demo_env["env"], timeout=120)
    assert mod.returncode == 0 and __version__ in mod.stdout


def _install_plugin(root):
    """A tiny installed distribution (dist-info + entry point) holding one paper, on a path of its own."""
    pkg = root / "gradlab_demo_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin_paper.py").write_text(
        "from gradlab.claims import Check, Evidence, Paper, claim\n"
        "PAPER = Paper(key='plugin-paper', title='A paper from a plugin', cluster='optim',\n"
        "              statement='Plugins register papers through entry points.')\n"
        "@claim(paper='plugin-paper', title='two plus two')\n"
        "def arithmetic(run):\n"
        "    v = 2 + 2\n"
        "    return Evidence(metrics={'v': v}, criterion='v == 4', passed=v == 4, headline=(Check('v', v, '<=', 4),))\n")
    info = root / "gradlab_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gradlab-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gradlab.papers]\ndemo_plugin = gradlab_demo_plugin.plugin_paper\n")


def test_an_installed_plugin_appears_without_any_environment_variable(demo_env, tmp_path):
    import json
    import os

    site = tmp_path / "site"
    site.mkdir()
    _install_plugin(site)
    env = {k: v for k, v in demo_env["env"].items() if k != "GRADLAB_EXTRA_PAPERS"}
    env["PYTHONPATH"] = str(site) + os.pathsep + env.get("PYTHONPATH", "")
    out = gradlab_cli("list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    papers = {p["key"]: p for p in json.loads(out.stdout)}
    assert len(papers) == 40 and papers["plugin-paper"]["claims"] == ["plugin-paper/arithmetic"]
    assert papers["lion"]["components"] and papers["plugin-paper"]["status"] == "implemented"
    store = tmp_path / "s.sqlite"
    run = gradlab_cli("reproduce", "--only", "plugin-paper", "--scale", "quick", "--store", str(store),
                      "--out", str(tmp_path / "r"), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    shown = gradlab_cli("show", "plugin-paper", "--store", str(store), "--json", env=env)
    info = json.loads(shown.stdout)
    assert info["status"] == "reproduced" and info["claims"][0]["headline"][0]["label"] == "v"
    assert info["statement"].startswith("Plugins register")
    bad = gradlab_cli("show", "no-such-paper", env=env)
    assert bad.returncode == 2 and "Valid keys" in bad.stderr
