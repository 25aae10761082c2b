"""Network Memory Footprint Compression Through Jointly Learnable Codebooks and Mappings (arXiv 2309.17361).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="jlcm",
    title="Network Memory Footprint Compression Through Jointly Learnable Codebooks and Mappings",
    short_title="JLCM codebooks",
    cluster="numerics",
    arxiv="2309.17361",
    components=(),
)
