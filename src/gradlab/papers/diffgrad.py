"""diffGrad: An Optimization Method for Convolutional Neural Networks (arXiv 1909.11015).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="diffgrad",
    title="diffGrad: An Optimization Method for Convolutional Neural Networks",
    short_title="diffGrad",
    cluster="optim",
    arxiv="1909.11015",
    components=(),
)
