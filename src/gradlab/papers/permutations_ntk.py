"""Exact Learning of Permutations for Nonzero Binary Inputs with Logarithmic Training Size and Quadratic Ensemble Complexity (arXiv 2502.16763).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="permutations-ntk",
    title="Exact Learning of Permutations for Nonzero Binary Inputs with Logarithmic Training Size and Quadratic Ensemble Complexity",
    short_title="Exact learning of permutations",
    cluster="dynamics",
    arxiv="2502.16763",
    components=(),
)
