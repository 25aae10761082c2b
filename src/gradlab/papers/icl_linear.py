"""Trained Transformers Learn Linear Models In-Context (arXiv 2306.09927).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="icl-linear",
    title="Trained Transformers Learn Linear Models In-Context",
    short_title="Trained transformers learn linear models",
    cluster="incontext",
    arxiv="2306.09927",
    components=(),
)
