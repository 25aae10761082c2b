"""Principled Approaches for Extending Neural Architectures to Function Spaces for Operator Learning (arXiv 2506.10973).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="nns-to-nos",
    title="Principled Approaches for Extending Neural Architectures to Function Spaces for Operator Learning",
    short_title="Architectures in function space",
    cluster="operators",
    arxiv="2506.10973",
    components=(),
)
