"""On Mesa-Optimization in Autoregressively Trained Transformers: Emergence and Capability (arXiv 2405.16845).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="mesa-opt",
    title="On Mesa-Optimization in Autoregressively Trained Transformers: Emergence and Capability",
    short_title="Mesa-optimization",
    cluster="incontext",
    arxiv="2405.16845",
    components=(),
)
