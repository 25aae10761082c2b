"""Transformers learn in-context by gradient descent (arXiv 2212.07677).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="icl-gd",
    title="Transformers learn in-context by gradient descent",
    short_title="ICL by gradient descent",
    cluster="incontext",
    arxiv="2212.07677",
    components=(),
)
