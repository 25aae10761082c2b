"""Shared setups of the generative claims: the cached tiny text-to-image model and its shape judge.

PTI, AlignIT, NeTI and ControlNet++ all load the tiny model (:func:`gradlab.generative.tiny.load_tiny_t2i`),
trained at first use and cached; PTI and AlignIT also read images with the judge
(:func:`gradlab.generative.judge.load_shape_judge`). Declaring them as :class:`~gradlab.claims.types.Setup` lets
the runner train each once, in one worker, while the other workers run claims that need neither, instead of
several workers waiting on the same cache lock. The claims still call the same loaders (a cache hit then).
This module is not a paper (the registry skips names starting with ``_``) and is not part of any paper's
fingerprint: the cached artifacts are keyed by their own recipes and sources.
"""

from __future__ import annotations

from gradlab.claims import ClaimRun, setup


def t2i_scale(run: ClaimRun) -> str:
    """The tiny-model recipe a claim run uses: ``smoke`` at smoke scale, else ``quick``."""
    return run.pick(smoke="smoke", quick="quick", full="quick")


@setup("tiny-t2i", timeouts={"smoke": 300, "quick": 1200, "full": 1200})
def tiny_t2i(run: ClaimRun) -> None:
    """Train (or find cached) the tiny text-to-image model of ``run``'s scale."""
    from gradlab.generative.tiny import load_tiny_t2i

    run.progress(0.0, "training the tiny text-to-image model (cached)")
    load_tiny_t2i(t2i_scale(run))


@setup("shape-judge", timeouts={"smoke": 300, "quick": 900, "full": 900})
def shape_judge(run: ClaimRun) -> None:
    """Train (or find cached) the shape/colour judge of ``run``'s scale."""
    from gradlab.generative.judge import load_shape_judge

    run.progress(0.0, "training the shape judge (cached)")
    load_shape_judge(t2i_scale(run))
