"""Exploration of Interpretability Techniques for Deep COVID-19 Classification using Chest X-ray Images (arXiv 2006.02570).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="covid-xai",
    title="Exploration of Interpretability Techniques for Deep COVID-19 Classification using Chest X-ray Images",
    short_title="COVID-19 CXR interpretability",
    cluster="explain",
    arxiv="2006.02570",
    components=(),
)
