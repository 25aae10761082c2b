"""Symbolic Discovery of Optimization Algorithms (arXiv 2302.06675).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="lion",
    title="Symbolic Discovery of Optimization Algorithms",
    short_title="Lion (symbolic discovery)",
    cluster="optim",
    arxiv="2302.06675",
    components=(),
)
