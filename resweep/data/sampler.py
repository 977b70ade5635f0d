"""Deterministic batch keys: a pure function of (seed, iteration, rank).

Each key is ``(image_index, sample_seed)``; the dataset derives crop, augmentation and noise
from ``sample_seed``. Resuming at iteration i therefore reproduces exactly the batches a
straight run would have drawn, and ranks draw disjoint parts of each epoch's permutation.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler


@lru_cache(maxsize=8)
def epoch_permutation(seed: int, epoch: int, num_images: int) -> np.ndarray:
    return np.random.default_rng([seed, 0x5EED, epoch]).permutation(num_images)


def batch_keys(
    seed: int, iteration: int, rank: int, per_worker_batch: int, world_size: int, num_images: int
) -> list[tuple[int, int]]:
    """Keys of one worker's batch at ``iteration`` (0-based)."""
    global_batch = per_worker_batch * world_size
    keys = []
    for j in range(per_worker_batch):
        position = iteration * global_batch + rank * per_worker_batch + j
        epoch, offset = divmod(position, num_images)
        image = int(epoch_permutation(seed, epoch, num_images)[offset])
        sample_seed = int(np.random.default_rng([seed, 0xC0DE, position]).integers(0, 2**62))
        keys.append((image, sample_seed))
    return keys


class BatchKeySampler(Sampler[list[tuple[int, int]]]):
    def __init__(
        self,
        *,
        seed: int,
        rank: int,
        world_size: int,
        per_worker_batch: int,
        num_images: int,
        start_iteration: int,
        total_iterations: int,
    ):
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.per_worker_batch = per_worker_batch
        self.num_images = num_images
        self.start = start_iteration
        self.total = total_iterations

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.total):
            yield batch_keys(
                self.seed, it, self.rank, self.per_worker_batch, self.world_size, self.num_images
            )


def train_loader(
    dataset: Dataset,
    *,
    seed: int,
    rank: int,
    world_size: int,
    per_worker_batch: int,
    start_iteration: int,
    stop_iteration: int,
    workers: int,
    pin_memory: bool,
) -> DataLoader:
    """One worker's training batches for iterations ``[start_iteration, stop_iteration)``."""
    sampler = BatchKeySampler(
        seed=seed,
        rank=rank,
        world_size=world_size,
        per_worker_batch=per_worker_batch,
        num_images=len(dataset),
        start_iteration=start_iteration,
        total_iterations=stop_iteration,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
