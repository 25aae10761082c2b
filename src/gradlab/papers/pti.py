"""Prompt Tuning Inversion for Text-Driven Image Editing Using Diffusion Models (arXiv 2305.04441).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="pti",
    title="Prompt Tuning Inversion for Text-Driven Image Editing Using Diffusion Models",
    short_title="Prompt tuning inversion",
    cluster="generative",
    arxiv="2305.04441",
    components=(),
)
