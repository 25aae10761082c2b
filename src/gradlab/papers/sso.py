"""Target-based Surrogates for Stochastic Optimization (arXiv 2302.02607).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="sso",
    title="Target-based Surrogates for Stochastic Optimization",
    short_title="Target-based surrogates",
    cluster="training",
    arxiv="2302.02607",
    components=(),
)
