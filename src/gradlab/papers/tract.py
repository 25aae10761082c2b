"""TrAct: Making First-layer Pre-Activations Trainable (arXiv 2410.23970).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="tract",
    title="TrAct: Making First-layer Pre-Activations Trainable",
    short_title="TrAct",
    cluster="training",
    arxiv="2410.23970",
    components=(),
)
