"""Data loaders for runner_evlgen: a resumable training stream and plain evaluation loaders.

Batches may carry ``n_skipped`` (unreadable samples dropped by the collater, see
``lavis_evlgen.datasets.datasets.caption``); :class:`SkipCountingCollate` guarantees the key on every
batch, whatever the dataset's own collater does with ``None`` samples.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.data.dataloader import default_collate

from lavis_evlgen.common.data_order import ResumableSampler, SeededSampleDataset
from lavis_evlgen.datasets.datasets.caption import collate_skipping
from lavis_evlgen.datasets.stream_state import STREAM_STATE_KEY, StreamStateCollate, find_streams

logger = logging.getLogger(__name__)


class SkipCountingCollate:
    """Drops ``None`` samples, collates the rest with ``collater``, adds their count to ``n_skipped``."""

    def __init__(self, collater: Optional[Callable[[list], dict]]):
        self.collater = collater or default_collate

    def __call__(self, samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        return collate_skipping(samples, self.collater)


class ResumableTrainLoader:
    """An endless batch stream whose position ``(epoch, batches)`` can be saved and restored.

    Each data epoch is one pass of a :class:`ResumableSampler` with ``drop_last``; the data-loader
    iterator is created lazily at the current position, from a generator of its own so that creating
    it never draws from the global torch generator (which dropout uses). Stream datasets inside the
    training data (webdataset shards) are positioned too: their per-worker states travel with the
    batches (``lavis_evlgen.datasets.stream_state``) and are part of :meth:`state_dict`.
    """

    def __init__(self, dataset: Dataset, collater: Optional[Callable], batch_size: int, num_workers: int,
                 seed: int, rank: int, world_size: int, pin_memory: bool):
        self.seeded = SeededSampleDataset(dataset, seed)
        self.sampler = ResumableSampler(len(dataset), seed, rank, world_size, shuffle=True)
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = self.sampler.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"run.batch_size_train={batch_size} exceeds the {self.sampler.per_rank} "
                             f"training samples each of the {world_size} process(es) gets")
        self.streams = find_streams(dataset)
        self.collate = StreamStateCollate(SkipCountingCollate(collater), self.seeded)
        self.stream_states: dict[int, list] = {}
        self._restore: dict[int, list] = {}
        self.loader = DataLoader(self.seeded, batch_size=batch_size, sampler=self.sampler,
                                 num_workers=num_workers, collate_fn=self.collate,
                                 drop_last=True, pin_memory=pin_memory, generator=torch.Generator())
        self.epoch = 0
        self.batches = 0
        self._iterator = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> "ResumableTrainLoader":
        return self

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            self._start()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self.batches = 0
            self._start()
            batch = next(self._iterator)
        self.batches += 1
        if STREAM_STATE_KEY in batch:
            worker, states = batch.pop(STREAM_STATE_KEY)
            self.stream_states[worker] = states
        return batch

    def _start(self) -> None:
        self.sampler.set_position(self.epoch, self.batches * self.batch_size)
        self.seeded.epoch = self.epoch
        self.loader.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        offset = self.batches % max(self.loader.num_workers, 1)
        self.collate.worker_offset = offset
        for k, stream in enumerate(self.streams):
            stream.restart_streams({w: states[k] for w, states in self._restore.items() if states[k] is not None},
                                   offset)
        self.stream_states, self._restore = dict(self._restore), {}
        self._iterator = iter(self.loader)

    def state_dict(self) -> dict[str, Any]:
        """Position: data epoch and samples of it this rank has consumed (and, with stream datasets,
        ``streams``: per logical worker, one state per stream; ``stream_workers``: the worker count)."""
        state: dict[str, Any] = {"epoch": self.epoch, "samples": self.batches * self.batch_size}
        if self.streams:
            state["streams"] = dict(self.stream_states)
            state["stream_workers"] = self.loader.num_workers
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._restore = {int(w): list(states) for w, states in state.get("streams", {}).items()}
        if self._restore and state.get("stream_workers") != self.loader.num_workers:
            logger.warning("the shard streams were saved with run.num_workers=%s, resuming with %d: they start "
                           "anew instead of continuing", state.get("stream_workers"), self.loader.num_workers)
            self._restore = {}
        # Saved again as they are if this stream is not read before the next save (a ratio mixture's other sources).
        self.stream_states = dict(self._restore)
        self.batches = int(state["samples"]) // self.batch_size
        if self.batches * self.batch_size != int(state["samples"]):
            logger.warning("resuming at sample %d of epoch %d, not a multiple of the batch size %d: "
                           "continuing from sample %d", state["samples"], self.epoch, self.batch_size,
                           self.batches * self.batch_size)
        self._iterator = None

    @staticmethod
    def portable(state: dict[str, Any]) -> dict[str, Any]:
        """``state`` for another world size: the sampler position, without the shard streams' states."""
        return {k: v for k, v in state.items() if k not in ("streams", "stream_workers")}


def eval_loader(dataset: Dataset, collater: Optional[Callable], batch_size: int, num_workers: int,
                rank: int, world_size: int, pin_memory: bool) -> DataLoader:
    """In-order loader; with several ranks each reads its share (padded, duplicates removed later)."""
    sampler = (DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
               if world_size > 1 else None)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=num_workers, collate_fn=SkipCountingCollate(collater), drop_last=False,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))
