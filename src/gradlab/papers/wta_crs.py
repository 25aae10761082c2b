"""Winner-Take-All Column Row Sampling for Memory Efficient Adaptation of Language Model (arXiv 2305.15265).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="wta-crs",
    title="Winner-Take-All Column Row Sampling for Memory Efficient Adaptation of Language Model",
    short_title="WTA-CRS",
    cluster="training",
    arxiv="2305.15265",
    components=(),
)
