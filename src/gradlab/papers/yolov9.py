"""YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information (arXiv 2402.13616).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="yolov9",
    title="YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information",
    short_title="YOLOv9 (PGI, GELAN)",
    cluster="generative",
    arxiv="2402.13616",
    components=(),
)
