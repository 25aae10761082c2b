"""NoProp: Training Neural Networks without Back-propagation or Forward-propagation (arXiv 2503.24322).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="noprop",
    title="NoProp: Training Neural Networks without Back-propagation or Forward-propagation",
    short_title="NoProp",
    cluster="training",
    arxiv="2503.24322",
    components=(),
)
