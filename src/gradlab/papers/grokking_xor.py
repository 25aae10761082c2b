"""Benign Overfitting and Grokking in ReLU Networks for XOR Cluster Data (arXiv 2310.02541).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="grokking-xor",
    title="Benign Overfitting and Grokking in ReLU Networks for XOR Cluster Data",
    short_title="Benign overfitting & grokking (XOR)",
    cluster="dynamics",
    arxiv="2310.02541",
    components=(),
)
