import math

import numpy as np
import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.input_gradients import PAPER

KEYS = {'mass_gap', 'diffroar_oracle_area', 'diffroar_small_k_gap', 'robust_mass_on_signal', 'standard_mass_on_signal'}
CLAIM = "input-gradients/robust_gradients_highlight_signal"
CLAIM2 = "input-gradients/standard_gradients_near_random"
KEYS2 = {'standard_minus_random', 'standard_minus_random_ci', 'diffroar_standard_small_k', 'diffroar_random_small_k',
         'diffroar_oracle_small_k', 'standard_clean_acc', 'oracle_minus_random'}


def test_smoke_evidence_is_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    assert isinstance(ev.passed, bool) and ev.criterion
    check_evidence(ev, required_metrics=KEYS)
    assert ev.passed == all(h.ok for h in ev.headline) and len(ev.headline) == 2
    assert ev.headline[0].value == ev.metrics["mass_gap"]


def test_standard_vs_random_smoke():
    ev = run_claim_inline(CLAIM2, scale="smoke")
    check_evidence(ev, required_metrics=KEYS2)
    m = ev.metrics
    diffs = m["standard_minus_random_per_seed"]
    assert len(diffs) == 2 and m["standard_minus_random_ci"]["mean"] == pytest.approx(float(np.mean(diffs)))
    assert ev.headline[0].value == m["standard_minus_random_ci"]["high"]
    assert ev.passed == ev.headline[0].ok
    assert set(ev.preconditions) == {"standard model learned", "DiffROAR can tell informative from random masks"}


def test_paper_records_the_new_claim():
    assert PAPER.statement and [r.claim for r in PAPER.revisions] == ["standard_gradients_near_random",
                                                                     "robust_gradients_highlight_signal"]


@pytest.mark.slow
def test_quick_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert all(math.isfinite(v) for v in ev.metrics.values() if isinstance(v, float))
