"""Sequential Training of Neural Networks with Gradient Boosting (arXiv 1909.12098).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="gb-nn",
    title="Sequential Training of Neural Networks with Gradient Boosting",
    short_title="Gradient-boosted NN",
    cluster="training",
    arxiv="1909.12098",
    components=(),
)
