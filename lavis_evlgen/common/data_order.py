"""A deterministic, resumable training data order, the same with or without data-loader workers.

* :class:`ResumableSampler` yields this rank's share of a permutation that depends only on
  ``(seed, epoch)``, and can start at any offset into it, so a resumed run reads exactly the samples
  an uninterrupted run would have read next (no hidden iterator state, unlike LAVIS's IterLoader).
* :class:`SeededSampleDataset` loads every sample under random generators seeded from
  ``(seed, epoch, index)``, so random augmentations do not depend on which worker loads a sample or
  on how far the workers' generators have advanced: they come out the same after a resume.
"""
from __future__ import annotations

import contextlib
import math
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler[int]):
    """Indices of a ``size``-sample dataset for one rank, epoch by epoch, from any offset.

    Like ``DistributedSampler``: the (shuffled) order is padded by repeating its head to a multiple
    of ``world_size`` and rank ``r`` takes positions ``r, r + world_size, ...``. ``set_position``
    chooses the epoch and how many of this rank's indices to skip.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.per_rank = math.ceil(size / world_size)
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Begin the next iteration at this rank's ``start``-th index of ``epoch``."""
        self.epoch = epoch
        self.start = start

    def epoch_tensor(self, epoch: int) -> torch.Tensor:
        """This rank's full index order for ``epoch`` as an int64 tensor (8 bytes per index, not a list)."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=gen)
        else:
            order = torch.arange(self.size)
        total = self.per_rank * self.world_size
        order = torch.cat([order, order[: total - self.size]])
        return order[self.rank:total:self.world_size]

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's full index list for ``epoch``."""
        return self.epoch_tensor(epoch).tolist()

    def __iter__(self) -> Iterator[int]:
        for chunk in self.epoch_tensor(self.epoch)[self.start:].split(1 << 16):
            yield from chunk.tolist()

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


@contextlib.contextmanager
def seeded_generators(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch (CPU) generators for the block, then restore their states."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededSampleDataset(Dataset):
    """Wraps a map-style dataset so that ``dataset[i]`` in epoch ``e`` always sees the same randomness.

    Set ``epoch`` before creating a data-loader iterator (workers copy the wrapper when they start).
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with seeded_generators(sample_seed(self.seed, self.epoch, index)):
            return self.dataset[index]
