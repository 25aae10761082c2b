"""AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods (arXiv 2402.11215).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="adadagrad",
    title="AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
    short_title="AdAdaGrad",
    cluster="optim",
    arxiv="2402.11215",
    components=(),
)
