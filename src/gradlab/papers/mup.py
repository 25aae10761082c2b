"""Feature Learning in Infinite-Width Neural Networks (arXiv 2011.14522).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="mup",
    title="Feature Learning in Infinite-Width Neural Networks",
    short_title="Feature learning at infinite width (muP)",
    cluster="dynamics",
    arxiv="2011.14522",
    components=(),
)
