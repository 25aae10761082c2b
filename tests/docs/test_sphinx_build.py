"""The API reference builds with warnings as errors, and every exported name is in it.

A malformed docstring (an RST error), a broken cross-reference to a gradlab object or a page that fails to
generate fails this test, as it fails ``make docs``. Every name in a documented package's ``__all__`` must appear
in the built inventory (``objects.inv``), every example must be included in the docs, and every paper of the
registry must have its page.
"""

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
from _gen import PACKAGES  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-E", "-q", "-j", "1",
         "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"sphinx reported problems:\n{proc.stderr[-6000:]}"
    return out


def _inventory(out: Path) -> set[str]:
    from sphinx.util.inventory import InventoryFile

    with open(out / "objects.inv", "rb") as fh:
        inv = InventoryFile.load(fh, "", lambda base, uri: uri)
    names: set[str] = set()
    for role, entries in inv.items():
        if role.startswith("py:"):
            names.update(entries)
    return names


def test_every_exported_name_is_documented(built):
    documented = _inventory(built)
    missing = []
    for short, _ in PACKAGES:
        package = f"gradlab.{short}"
        try:
            mod = importlib.import_module(package)
        except ModuleNotFoundError:
            continue
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if isinstance(obj, type(sys)):  # an exported submodule
                found = obj.__name__ in documented
            elif getattr(obj, "__module__", "").startswith("gradlab.") and hasattr(obj, "__qualname__"):
                found = f"{obj.__module__}.{obj.__qualname__}" in documented  # where it is defined
            else:  # a constant: documented in one of the package's modules
                found = any(full.startswith(package + ".") and full.endswith("." + name) for full in documented)
            if not found:
                missing.append(f"{package}.{name}")
    assert not missing, f"exported but not in the API reference: {missing}"


def test_every_package_has_init_exports():
    for short, _ in PACKAGES:
        try:
            mod = importlib.import_module(f"gradlab.{short}")
        except ModuleNotFoundError:
            continue
        assert getattr(mod, "__all__", None), f"gradlab.{short} has no __all__"
        for name in mod.__all__:
            assert hasattr(mod, name), f"gradlab.{short}.__all__ names {name!r}, which it does not define"


def test_pages_exist(built):
    from gradlab.claims.registry import load_registry

    for key in load_registry().papers:
        assert (built / "papers" / f"{key}.html").is_file(), key
    for short, _ in PACKAGES:
        exists = importlib.util.find_spec(f"gradlab.{short}") is not None
        assert (built / "api" / f"{short}.html").is_file() == exists, short
    examples = (DOCS / "examples.rst").read_text()
    for script in (ROOT / "examples").glob("*.py"):
        assert f"../examples/{script.name}" in examples, f"{script.name} is not included in docs/examples.rst"
    # equations are rendered by a MathJax copy inside the site when the offline extension is installed
    page = (built / "api" / "optim.html").read_text()
    assert "math notranslate" in page
