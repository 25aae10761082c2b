"""Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for Deep Convolutional Neural Network Models (arXiv 1908.01224).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from gradlab.claims import Paper

PAPER = Paper(
    key="smooth-gradcampp",
    title="Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for Deep Convolutional Neural Network Models",
    short_title="Smooth Grad-CAM++",
    cluster="explain",
    arxiv="1908.01224",
    components=(),
)
