"""Constrained Optimization via Exact Augmented Lagrangian and Randomized Iterative Sketching (arXiv 2305.18379).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="auglag-sketch",
    title="Constrained Optimization via Exact Augmented Lagrangian and Randomized Iterative Sketching",
    short_title="AdaSketch-Newton",
    cluster="curvature",
    arxiv="2305.18379",
    components=(),
)
