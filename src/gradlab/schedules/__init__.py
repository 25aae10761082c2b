"""Batch-size and learning-rate policies: adaptive batch sizes from sampling tests (AdAdaGrad), and the
batch-size learning-rate rules of Granziol et al. (``scale_learning_rate``: linear for SGD, sqrt for adaptive
methods; ``LanczosLR``: an ``lr_scheduler`` that sets the learning rate from periodic Lanczos estimates of the top
Hessian eigenvalue). The latter live in :mod:`gradlab.curvature.batch_scaling`, next to the curvature toolkit they
are measured with, and are re-exported here where a user looks for schedules.
"""

from gradlab.curvature.batch_scaling import LanczosLR, scale_learning_rate

from gradlab.schedules.adaptive_batch import TESTS, AdaptiveBatchSize, BatchTestResult, batch_test_statistics
from gradlab.schedules.loader import AdaptiveBatchSampler, adaptive_loader
from gradlab.schedules.per_sample import flatten_per_sample, per_sample_grads

__all__ = [
    "LanczosLR", "scale_learning_rate",
    "TESTS", "AdaptiveBatchSize", "BatchTestResult", "batch_test_statistics",
    "AdaptiveBatchSampler", "adaptive_loader", "flatten_per_sample", "per_sample_grads",
]
