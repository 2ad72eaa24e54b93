"""Positions of stream datasets inside data-loader workers, carried to the training loop and back.

A *stream* dataset (``ShardCaptionStream``) returns the next sample of a per-worker stream whatever
index it is asked for, so the sampler's position alone cannot resume it. It implements

* ``stream_state() -> dict | None``: this process's position (None before the first sample), and
* ``restart_streams(states: {logical worker: state}, worker_offset)``: start anew, logical worker ``w``
  continuing from ``states[w]``.

:class:`StreamStateCollate` runs in each worker after the batch is collated and adds, under
:data:`STREAM_STATE_KEY`, the worker's logical id and one state per stream found in the dataset (a
mixture of several sources holds one state per source, in :func:`find_streams` order). The loader
keeps the state of the last batch it handed out from each logical worker: exactly the position an
uninterrupted run is at.

Logical workers: a PyTorch loader hands batch ``k`` of an iterator to worker ``k % W``. A loader resumed
at batch ``b`` of an epoch starts a new iterator, whose worker ``i`` produces the batches worker
``(b + i) % W`` produced before; :func:`logical_worker` with ``worker_offset = b % W`` names that worker.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch.utils.data import Dataset, get_worker_info

STREAM_STATE_KEY = "stream_state"


def logical_worker(worker_offset: int) -> int:
    """The logical worker this process serves: ``(worker id + offset) % workers``, 0 without workers."""
    info = get_worker_info()
    return 0 if info is None else (info.id + worker_offset) % info.num_workers


def find_streams(dataset: Any) -> list[Any]:
    """The stream datasets inside ``dataset`` (through ``.dataset`` and ``.datasets``), depth first."""
    if hasattr(dataset, "stream_state") and hasattr(dataset, "restart_streams"):
        return [dataset]
    found = []
    inner = getattr(dataset, "dataset", None)
    if isinstance(inner, Dataset):
        found += find_streams(inner)
    for child in getattr(dataset, "datasets", None) or []:
        found += find_streams(child)
    return found


class StreamStateCollate:
    """``collate(samples)`` plus, when ``dataset`` holds streams, (logical worker, their states)."""

    def __init__(self, collate: Callable[[list], dict[str, Any]], dataset: Dataset):
        self.collate = collate
        self.dataset = dataset
        self.worker_offset = 0
        self._streams: Optional[list[Any]] = None

    def __call__(self, samples: list) -> dict[str, Any]:
        batch = self.collate(samples)
        if self._streams is None:
            self._streams = find_streams(self.dataset)
        if self._streams:
            batch[STREAM_STATE_KEY] = (logical_worker(self.worker_offset),
                                       [stream.stream_state() for stream in self._streams])
        return batch
