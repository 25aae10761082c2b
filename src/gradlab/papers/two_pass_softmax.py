"""The Two-Pass Softmax Algorithm (arXiv 2001.04438).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="two-pass-softmax",
    title="The Two-Pass Softmax Algorithm",
    short_title="Two-pass softmax",
    cluster="numerics",
    arxiv="2001.04438",
    components=(),
)
