"""Do Input Gradients Highlight Discriminative Features? (arXiv 2102.12781).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="input-gradients",
    title="Do Input Gradients Highlight Discriminative Features?",
    short_title="Input gradients & discriminative features",
    cluster="explain",
    arxiv="2102.12781",
    components=(),
)
