"""A Neural Space-Time Representation for Text-to-Image Personalization (arXiv 2305.15391).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="neti",
    title="A Neural Space-Time Representation for Text-to-Image Personalization",
    short_title="NeTI",
    cluster="generative",
    arxiv="2305.15391",
    components=(),
)
