"""The README's "Benchmark your own optimizer" example, run as written: its ``mypkg/sub.py`` and its command."""

import json
import re
import shlex
import sys
from pathlib import Path

from gradlab.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Benchmark your own optimizer\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_readme_bench_example_runs_via_the_cli(tmp_path, monkeypatch, capsys):
    section = _section()
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(code) == 1 and len(commands) == 1
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "sub.py").write_text(code[0])
    argv = shlex.split(commands[0].replace("\\\n", " "))
    assert argv[:2] == ["gradlab", "bench"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mypkg", None)
    sys.modules.pop("mypkg.sub", None)
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out
    assert "rmsprop" in out and "ranking" in out
    data = json.loads((tmp_path / "bench-out" / "results.json").read_text())
    assert data["submissions"] == ["rmsprop", "adamw", "sgd_nesterov"]
    assert len(data["trials"]) == 3 * 2 * 3  # submissions x workloads x trials
    assert (tmp_path / "bench-out" / "BENCH.md").exists() and (tmp_path / "bench-out" / "profile.png").exists()
    assert main(argv[1:]) == 0  # the second run resumes every trial
    assert "18 resumed" in capsys.readouterr().out
