"""A Deep Conjugate Direction Method for Iteratively Solving Linear Systems (arXiv 2205.10763).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="dcdm",
    title="A Deep Conjugate Direction Method for Iteratively Solving Linear Systems",
    short_title="Deep conjugate direction method",
    cluster="operators",
    arxiv="2205.10763",
    components=(),
)
