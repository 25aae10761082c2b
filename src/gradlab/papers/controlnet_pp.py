"""ControlNet++: Improving Conditional Controls with Efficient Consistency Feedback (arXiv 2404.07987).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="controlnet-pp",
    title="ControlNet++: Improving Conditional Controls with Efficient Consistency Feedback",
    short_title="ControlNet++",
    cluster="generative",
    arxiv="2404.07987",
    components=(),
)
