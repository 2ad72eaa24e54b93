"""Training data drawn from several datasets in fixed proportions (``run.train_dataset_ratios``).

Without ratios, runner_evlgen concatenates the training datasets, so each is sampled in proportion
to its size (the paper's choice, appendix D). :class:`RatioMixture` instead gives dataset ``k`` a block
of ``round(length * w_k / sum(w))`` positions; position ``i`` of block ``k`` returns a sample of
dataset ``k`` drawn uniformly at random (with replacement), so small datasets are repeated and large
ones subsampled. Under the runner's ``SeededSampleDataset`` the draw depends only on (seed, epoch,
index), so it is reproducible and differs between epochs.
"""
from __future__ import annotations

import bisect
import random
from typing import Any, Mapping, Optional

from torch.utils.data import Dataset

from lavis_evlgen.datasets.datasets.caption import collate_skipping


def block_sizes(ratios: list[float], length: int) -> list[int]:
    """Integer block sizes proportional to ``ratios`` that sum to ``length`` (largest remainders)."""
    if not ratios or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be non-negative with a positive sum, got {ratios}")
    exact = [length * r / sum(ratios) for r in ratios]
    sizes = [int(x) for x in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda k: exact[k] - sizes[k], reverse=True)
    for k in by_remainder[: length - sum(sizes)]:
        sizes[k] += 1
    return sizes


class RatioMixture(Dataset):
    """``length`` samples split among ``datasets`` by ``ratios`` (see module doc)."""

    def __init__(self, datasets: Mapping[str, Dataset], ratios: Mapping[str, float], length: Optional[int] = None):
        if set(ratios) != set(datasets):
            raise ValueError(f"ratios must name every training dataset exactly: got {sorted(ratios)}, "
                             f"datasets {sorted(datasets)}")
        self.names = [name for name in datasets if ratios[name] > 0]
        self.datasets = [datasets[name] for name in self.names]
        empty = [name for name, ds in zip(self.names, self.datasets) if len(ds) == 0]
        if empty:
            raise ValueError(f"cannot sample from empty dataset(s) {empty}")
        length = sum(len(ds) for ds in self.datasets) if length is None else length
        self.sizes = block_sizes([float(ratios[name]) for name in self.names], length)
        self.ends = [sum(self.sizes[: k + 1]) for k in range(len(self.sizes))]

    def __len__(self) -> int:
        return self.ends[-1]

    def __getitem__(self, index: int) -> Any:
        k = bisect.bisect_right(self.ends, index)
        dataset = self.datasets[k]
        return dataset[random.randrange(len(dataset))]

    def collater(self, samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        """Collate the readable samples on the keys they share; count the unreadable under ``n_skipped``."""
        return collate_skipping(samples, self._collate_shared_keys)

    def _collate_shared_keys(self, kept: list[dict[str, Any]]) -> dict[str, Any]:
        shared = set.intersection(*(set(s) for s in kept))
        return self.datasets[0].collater([{k: v for k, v in s.items() if k in shared} for s in kept])
