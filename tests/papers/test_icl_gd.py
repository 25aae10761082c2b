import math

import pytest

from gradlab.claims import Evidence
from gradlab.claims.inline import run_claim_inline

CLAIM = "icl-gd/lsa_equals_one_gd_step"


def _numbers(value):
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return []


def test_smoke_evidence_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    assert isinstance(ev, Evidence)
    assert ev.metrics and ev.criterion
    for name, value in ev.metrics.items():
        for x in _numbers(value):
            assert math.isfinite(x), f"metric {name} is not finite: {value!r}"
        assert not (isinstance(value, str) and value in ("nan", "inf", "-inf")), f"metric {name} = {value}"
    assert ev.figures
    pngs = ev.figure_pngs()
    assert all(p.startswith(b"\x89PNG") for p in pngs.values())


@pytest.mark.slow
def test_quick_scale_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert isinstance(ev.passed, bool)
