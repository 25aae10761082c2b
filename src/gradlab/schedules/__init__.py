"""Batch-size and learning-rate policies: adaptive batch sizes from sampling tests (AdAdaGrad)."""

from gradlab.schedules.adaptive_batch import TESTS, AdaptiveBatchSize, BatchTestResult, batch_test_statistics
from gradlab.schedules.loader import AdaptiveBatchSampler, adaptive_loader
from gradlab.schedules.per_sample import flatten_per_sample, per_sample_grads

__all__ = [
    "TESTS", "AdaptiveBatchSize", "BatchTestResult", "batch_test_statistics",
    "AdaptiveBatchSampler", "adaptive_loader", "flatten_per_sample", "per_sample_grads",
]
