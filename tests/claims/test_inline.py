import pytest
from matplotlib.figure import Figure

from gradlab.claims import Evidence
from gradlab.claims.inline import check_evidence, run_claim_inline


def _fig():
    fig = Figure()
    fig.subplots().plot([0, 1])
    return fig


def test_check_evidence_accepts_well_formed_and_returns_pngs():
    ev = Evidence(metrics={"a": 1.0, "b": [1, 2], "c": {"d": 3.0}}, criterion="a > 0", passed=True,
                  figures={"f": _fig()})
    pngs = check_evidence(ev, required_metrics=("a", "b"))
    assert list(pngs) == ["f"] and pngs["f"].startswith(b"\x89PNG")


@pytest.mark.parametrize("metrics,figures,required,match", [
    ({"a": 1.0}, {}, (), "figure"),
    ({"a": float("nan")}, {"f": b"\x89PNG"}, (), "'a' is not finite"),
    ({"a": [1.0, float("inf")]}, {"f": b"\x89PNG"}, (), "'a' is not finite"),
    ({"a": 1.0}, {"f": b"GIF89"}, (), "not a PNG"),
    ({"a": 1.0}, {"f": b"\x89PNG"}, ("b",), r"lacks metrics \['b'\]"),
    ({}, {"f": b"\x89PNG"}, (), "no metrics"),
])
def test_check_evidence_rejects(metrics, figures, required, match):
    ev = Evidence(metrics=metrics, criterion="x", passed=False, figures=figures)
    with pytest.raises(ValueError, match=match):
        check_evidence(ev, required_metrics=required)


def test_check_evidence_allows_declared_nonfinite_and_rejects_non_evidence():
    ev = Evidence(metrics={"ratio": float("inf")}, criterion="x", passed=False, figures={"f": b"\x89PNG"})
    check_evidence(ev, allow_nonfinite=("ratio",))
    with pytest.raises(TypeError, match="Evidence"):
        check_evidence({"metrics": {}})


def test_run_claim_inline_unknown_claim_and_scale():
    with pytest.raises(KeyError):
        run_claim_inline("lion/no_such_claim", scale="smoke")
    with pytest.raises(ValueError, match="scale"):
        run_claim_inline("lion/lion_vs_adamw", scale="huge")
