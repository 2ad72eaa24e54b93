"""Deterministic, resumable data order and per-sample seeded randomness."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from lavis_evlgen.common.data_order import ResumableSampler, SeededSampleDataset, sample_seed


def test_order_depends_on_seed_and_epoch_only():
    a, b = ResumableSampler(50, seed=3), ResumableSampler(50, seed=3)
    assert a.epoch_indices(0) == b.epoch_indices(0)
    assert a.epoch_indices(0) != a.epoch_indices(1)
    assert a.epoch_indices(0) != ResumableSampler(50, seed=4).epoch_indices(0)
    assert sorted(a.epoch_indices(2)) == list(range(50))


def test_start_offset_continues_the_same_epoch():
    sampler = ResumableSampler(20, seed=1)
    full = sampler.epoch_indices(5)
    sampler.set_position(5, 7)
    assert list(sampler) == full[7:]
    assert len(sampler) == 13


def test_ranks_partition_the_padded_order():
    world = 3
    shares = [ResumableSampler(10, seed=0, rank=r, world_size=world).epoch_indices(1) for r in range(world)]
    assert all(len(s) == 4 for s in shares)
    merged = [i for s in shares for i in s]
    assert set(merged) == set(range(10))
    assert len(merged) == 12


def test_unshuffled_order_is_the_index_order():
    assert ResumableSampler(5, seed=9, shuffle=False).epoch_indices(3) == [0, 1, 2, 3, 4]


class RandomItem(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_seeded_samples_ignore_the_global_generators_and_restore_them():
    data = SeededSampleDataset(RandomItem(), seed=7)
    torch.manual_seed(0)
    first = data[2]
    torch.manual_seed(123)
    random.seed(5)
    before = torch.get_rng_state()
    again = data[2]
    assert again == first
    assert torch.equal(torch.get_rng_state(), before)
    data.epoch = 1
    assert data[2] != first
    assert data[3] != first


def test_sample_seed_differs_by_index_and_epoch():
    assert len({sample_seed(1, 0, i) for i in range(100)}) == 100
    assert sample_seed(1, 0, 5) != sample_seed(1, 1, 5)
