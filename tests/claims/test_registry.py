import pytest

from gradlab.claims import claim, load_registry
from gradlab.claims.types import CLUSTERS

# The keys of shared/PAPERS.md (the project's paper list), written out so the test needs nothing outside the repo.
SEED_KEYS = {
    "diffgrad", "lion", "adam-vs-sgd", "adadagrad", "lr-batch-rmt", "gn-smoothness", "auglag-sketch", "tract", "sso",
    "gb-nn", "noprop", "wta-crs", "algoperf", "covid-xai", "which-explanation", "input-gradients",
    "xai-neuroimaging", "smooth-gradcampp", "blind-spots", "icl-gd", "icl-newton", "icl-linear", "mesa-opt",
    "tf-svm", "permutations-ntk", "grokking-xor", "mup", "dcdm", "mgno", "nns-to-nos", "orex", "two-pass-softmax",
    "jlcm", "perceptual-msssim", "controlnet-pp", "alignit", "pti", "neti", "yolov9",
}


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


def test_registry_keys_match_papers_md():
    assert len(SEED_KEYS) == 39
    registry = load_registry()
    assert SEED_KEYS == {k for k in registry.papers if k != "demo"}


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
