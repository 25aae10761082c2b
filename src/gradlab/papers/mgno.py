"""MgNO: Efficient Parameterization of Linear Operators via Multigrid (arXiv 2310.19809).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="mgno",
    title="MgNO: Efficient Parameterization of Linear Operators via Multigrid",
    short_title="MgNO",
    cluster="operators",
    arxiv="2310.19809",
    components=(),
)
