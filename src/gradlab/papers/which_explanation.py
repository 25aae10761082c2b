"""Which Explanation Should I Choose? A Function Approximation Perspective to Characterizing Post Hoc Explanations (arXiv 2206.01254).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="which-explanation",
    title="Which Explanation Should I Choose? A Function Approximation Perspective to Characterizing Post Hoc Explanations",
    short_title="Which explanation?",
    cluster="explain",
    arxiv="2206.01254",
    components=(),
)
