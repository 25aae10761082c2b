"""Learning to Generate Images with Perceptual Similarity Metrics (arXiv 1511.06409).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="perceptual-msssim",
    title="Learning to Generate Images with Perceptual Similarity Metrics",
    short_title="Perceptual losses (MS-SSIM)",
    cluster="numerics",
    arxiv="1511.06409",
    components=(),
)
