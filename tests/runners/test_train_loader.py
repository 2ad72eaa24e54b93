"""Resumable training stream and skip-counting collation."""
from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import Dataset

from lavis_evlgen.datasets.datasets.caption import collate_skipping
from lavis_evlgen.runners.train_loader import ResumableTrainLoader, SkipCountingCollate, eval_loader


class Numbers(Dataset):
    """Item i is {"x": i, "noise": <random>}; items in ``broken`` are unreadable (None)."""

    def __init__(self, n: int, broken=()):
        self.n, self.broken = n, set(broken)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.broken:
            return None
        return {"x": torch.tensor(i), "noise": torch.tensor(random.random())}


def stream(dataset, world_size=1, rank=0, workers=0, batch_size=2):
    return ResumableTrainLoader(dataset, None, batch_size, workers, seed=5, rank=rank, world_size=world_size,
                                pin_memory=False)


def take(loader, n):
    return [next(loader) for _ in range(n)]


def test_skip_counting_collate_with_plain_and_skipping_collaters():
    batch = SkipCountingCollate(None)([{"x": torch.tensor(1)}, None, None])
    assert batch["n_skipped"] == 2 and batch["x"].tolist() == [1]
    batch = SkipCountingCollate(collate_skipping)([None, {"x": torch.tensor(2)}])
    assert batch["n_skipped"] == 1
    assert SkipCountingCollate(None)([None]) == {"n_skipped": 1}


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_from_saved_position_gives_the_same_batches(workers):
    data = Numbers(10)
    full = take(stream(data, workers=workers), 12)
    first = stream(data, workers=workers)
    take(first, 7)
    resumed = stream(data, workers=workers)
    resumed.load_state_dict(first.state_dict())
    rest = take(resumed, 5)
    for a, b in zip(full[7:], rest):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["noise"], b["noise"])


def test_epochs_cover_the_data_and_change_order():
    loader = stream(Numbers(10))
    epoch0 = [i for b in take(loader, 5) for i in b["x"].tolist()]
    epoch1 = [i for b in take(loader, 5) for i in b["x"].tolist()]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    assert loader.state_dict() == {"epoch": 1, "samples": 10}


def test_creating_iterators_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    take(stream(Numbers(4)), 5)
    assert torch.equal(torch.rand(1), expected)


def test_two_ranks_read_disjoint_halves():
    data = Numbers(8)
    seen = [sorted(i for b in take(stream(data, 2, r), 2) for i in b["x"].tolist()) for r in range(2)]
    assert sorted(seen[0] + seen[1]) == list(range(8))


def test_batch_larger_than_the_share_is_a_clear_error():
    with pytest.raises(ValueError, match="run.batch_size_train=8"):
        stream(Numbers(6), world_size=2, batch_size=8)


def test_eval_loader_pads_across_ranks_in_order():
    ids = [b["x"].tolist() for r in range(2) for b in eval_loader(Numbers(3), None, 4, 0, r, 2, False)]
    assert ids == [[0, 2], [1, 0]]
