"""Transformers as Support Vector Machines (arXiv 2308.16898).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="tf-svm",
    title="Transformers as Support Vector Machines",
    short_title="Transformers as SVMs",
    cluster="incontext",
    arxiv="2308.16898",
    components=(),
)
