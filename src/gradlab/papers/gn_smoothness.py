"""Gradient-Normalized Smoothness for Optimization with Approximate Hessians (arXiv 2506.13710).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="gn-smoothness",
    title="Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
    short_title="Gradient-normalized smoothness",
    cluster="curvature",
    arxiv="2506.13710",
    components=(),
)
