"""OReX: Object Reconstruction from Planar Cross-sections Using Neural Fields (arXiv 2211.12886).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="orex",
    title="OReX: Object Reconstruction from Planar Cross-sections Using Neural Fields",
    short_title="OReX",
    cluster="operators",
    arxiv="2211.12886",
    components=(),
)
