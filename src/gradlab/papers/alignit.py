"""AlignIT: Enhancing Prompt Alignment in Customization of Text-to-Image Models (arXiv 2406.18893).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="alignit",
    title="AlignIT: Enhancing Prompt Alignment in Customization of Text-to-Image Models",
    short_title="AlignIT",
    cluster="generative",
    arxiv="2406.18893",
    components=(),
)
