"""Transformers Learn Higher-Order Optimization Methods for In-Context Learning: A Study with Linear Models (arXiv 2310.17086).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="icl-newton",
    title="Transformers Learn Higher-Order Optimization Methods for In-Context Learning: A Study with Linear Models",
    short_title="ICL as higher-order optimization",
    cluster="incontext",
    arxiv="2310.17086",
    components=(),
)
