"""A batch sampler whose batch size follows an :class:`~gradlab.schedules.adaptive_batch.AdaptiveBatchSize`.

Indices come from a stream of random permutations of ``range(n)`` (epochs are concatenated, so a batch may span
an epoch boundary, and every sample is seen once per epoch). Each batch is drawn when the loader asks for it, so a
batch-size change made by the policy after a step applies to the next batch (use ``num_workers=0``: worker
prefetching would draw batches before the policy changes).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gradlab.core.validation import check_int, check_type
from gradlab.schedules.adaptive_batch import AdaptiveBatchSize

__all__ = ["AdaptiveBatchSampler", "adaptive_loader"]


class AdaptiveBatchSampler(Sampler[list[int]]):
    """Yield lists of indices of size ``policy.batch_size`` until ``max_samples`` samples were drawn.

    Args:
        num_samples: dataset size ``n`` (>= 1).
        policy: any object with an integer ``batch_size`` attribute (usually an ``AdaptiveBatchSize``).
        max_samples: stop after this many samples in total (``None``: never stop).
        generator: the random source of the permutations.
    """

    def __init__(self, num_samples: int, policy: AdaptiveBatchSize, max_samples: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.num_samples = check_int("num_samples", num_samples, minimum=1)
        if not isinstance(getattr(policy, "batch_size", None), int):
            raise TypeError("policy must have an int attribute batch_size (e.g. an AdaptiveBatchSize)")
        self.policy = policy
        self.max_samples = None if max_samples is None else check_int("max_samples", max_samples, minimum=1)
        if generator is not None:
            check_type("generator", generator, torch.Generator)
        self.generator = generator
        self.samples_drawn = 0

    def __iter__(self) -> Iterator[list[int]]:
        buffer = torch.empty(0, dtype=torch.long)
        self.samples_drawn = 0
        while self.max_samples is None or self.samples_drawn < self.max_samples:
            b = int(self.policy.batch_size)
            if self.max_samples is not None:
                b = min(b, self.max_samples - self.samples_drawn)
            while buffer.numel() < b:
                perms = -(-(b - buffer.numel()) // self.num_samples)
                fresh = [torch.randperm(self.num_samples, generator=self.generator) for _ in range(perms)]
                buffer = torch.cat([buffer, *fresh])
            batch, buffer = buffer[:b], buffer[b:]
            self.samples_drawn += b
            yield batch.tolist()


def adaptive_loader(dataset: Dataset, policy: AdaptiveBatchSize, max_samples: int | None = None,
                    generator: torch.Generator | None = None, **loader_kwargs: Any) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` whose batches grow as ``policy`` says (single process)."""
    if loader_kwargs.get("num_workers", 0) != 0:
        raise ValueError("adaptive_loader needs num_workers=0 (workers prefetch batches before the policy updates)")
    for bad in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
        if bad in loader_kwargs:
            raise ValueError(f"adaptive_loader sets {bad} itself; do not pass it")
    sampler = AdaptiveBatchSampler(len(dataset), policy, max_samples=max_samples, generator=generator)
    return DataLoader(dataset, batch_sampler=sampler, **loader_kwargs)
