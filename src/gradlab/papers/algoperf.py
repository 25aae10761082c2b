"""Benchmarking Neural Network Training Algorithms (arXiv 2306.07179).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="algoperf",
    title="Benchmarking Neural Network Training Algorithms",
    short_title="AlgoPerf benchmark",
    cluster="training",
    arxiv="2306.07179",
    components=(),
)
