import re
from pathlib import Path

import pytest

from gradlab.claims import claim, load_registry
from gradlab.claims.types import CLUSTERS

PAPERS_MD = Path(__file__).resolve().parents[3] / "shared" / "PAPERS.md"


def test_registry_has_all_39_seed_papers():
    registry = load_registry()
    seed = [k for k in registry.papers if k != "demo"]
    assert len(seed) == 39
    for key, entry in registry.papers.items():
        assert entry.import_error is None, entry.import_error
        assert entry.paper.key == key
        assert entry.paper.cluster in CLUSTERS
        assert entry.module == entry.paper.module_name or key == "demo"
        assert entry.paper.title and entry.paper.short_title


@pytest.mark.skipif(not PAPERS_MD.exists(), reason="shared/PAPERS.md is outside this checkout")
def test_registry_keys_match_papers_md():
    keys = set(re.findall(r"^\| ([a-z0-9\-]+) \|", PAPERS_MD.read_text(), flags=re.M)) - {"key"}
    registry = load_registry()
    assert keys == {k for k in registry.papers if k != "demo"}


def test_resolve_keys_names_valid_keys():
    registry = load_registry()
    assert registry.resolve_keys(["lion", "diffgrad"]) == [k for k in registry.papers if k in ("lion", "diffgrad")]
    with pytest.raises(ValueError, match="nosuchpaper.*Valid keys: .*diffgrad"):
        registry.resolve_keys(["nosuchpaper"])


def test_claim_decorator_validates_arguments():
    with pytest.raises(ValueError, match="budget"):
        claim(paper="lion", title="t", budget="huge")
    with pytest.raises(ValueError, match="timeouts"):
        claim(paper="lion", title="t", timeouts={"quick": -1})
    with pytest.raises(ValueError, match="claim name"):
        claim(paper="lion", title="t", name="Bad Name")(lambda run: None)


def test_extra_papers_from_environment(demo_env):
    registry = load_registry()
    assert "demo" in registry.papers
    names = [c.name for c in registry.papers["demo"].claims]
    assert names == ["passes", "fails", "raises", "sleeps", "dies"]
    assert registry.claim("demo/sleeps").timeout("smoke") == 3.0
    assert registry.claim("demo/passes").timeout("quick") == 900.0
