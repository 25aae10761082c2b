"""Exploring Geometry of Blind Spots in Vision Models (arXiv 2310.19889).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="blind-spots",
    title="Exploring Geometry of Blind Spots in Vision Models",
    short_title="Blind spots (level sets)",
    cluster="explain",
    arxiv="2310.19889",
    components=(),
)
