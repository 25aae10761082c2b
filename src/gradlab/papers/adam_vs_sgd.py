"""Toward Understanding Why Adam Converges Faster Than SGD for Transformers (arXiv 2306.00204).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="adam-vs-sgd",
    title="Toward Understanding Why Adam Converges Faster Than SGD for Transformers",
    short_title="Why Adam beats SGD on transformers",
    cluster="optim",
    arxiv="2306.00204",
    components=(),
)
