"""Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training (arXiv 2006.09092).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="lr-batch-rmt",
    title="Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training",
    short_title="Learning rate vs batch size (RMT)",
    cluster="curvature",
    arxiv="2006.09092",
    components=(),
)
