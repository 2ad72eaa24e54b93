"""Image-caption pairs streamed from webdataset tar shards (LAION-115M, CC+SBU), LAVIS LaionDataset style.

Shards are named by brace patterns (``laion/{00000..11499}.tar``, several joined by ``::`` or given as a
list), drawn with replacement and their samples shuffled in a buffer (as LAVIS's ``ResampledShards`` and
``shuffle``, with a resumable state of our own, below). Each sample
is ``<key>.jpg`` (or png / jpeg / webp) plus ``<key>.txt`` or ``<key>.json`` with a ``caption``.

runner_evlgen reads map-style datasets, so :class:`ShardCaptionStream` is one: its length is the
nominal number of samples (what size-weighting and the epoch length use) and item ``i`` is simply
the next sample of this process's stream, whatever ``i`` is. Each data-loader worker of each rank
reads its own stream (:class:`ShardStream`), seeded from the dataset seed, the rank and the worker seed
PyTorch derives from the loader's generator (seeded per data epoch by the runner), so streams differ
between workers and epochs and a rerun with the same seed reads the same samples.

A stream resumes exactly. Its shards are drawn with replacement, draw ``j`` from a generator seeded by
``(stream seed, j)``, and read in tar order; a shuffle buffer (as webdataset's ``shuffle``) picks with
its own ``random.Random``. :meth:`ShardStream.state` is small: the seed, the generator state, the
current draw and how many samples of its shard were read, the ``(draw, member)`` names of the buffered
samples and the skips not yet returned. :meth:`ShardStream.from_state` rebuilds the same stream by
re-reading the shards those names point into (at most the buffered samples' shards plus the current
one), so the samples after a resume are the ones an uninterrupted run would have read. The runner's
loader collects one state per stream and data-loader worker with every batch (see
``lavis_evlgen.datasets.stream_state``).

Unreadable shards, members and images are skipped and counted: every error becomes a ``None`` item,
which :func:`collate_skipping` drops and counts under ``n_skipped``.
"""
from __future__ import annotations

import io
import json
import logging
import random
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import Dataset
from webdataset.shardlists import expand_source

from lavis_evlgen.datasets.datasets.caption import collate_skipping
from lavis_evlgen.datasets.stream_state import logical_worker

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def expand_shards(shards: str | Sequence[str]) -> list[str]:
    """Every shard path named by brace patterns (``a/{000..009}.tar``), ``::``-joined or listed."""
    if isinstance(shards, str):
        return expand_source(shards)
    return [path for pattern in shards for path in expand_source(pattern)]


class SkipCounter:
    """A webdataset error handler that logs the error, counts it and continues.

    ``pending`` counts errors not yet returned as skipped items; more than ``limit`` errors in a row
    without a good sample in between raise RuntimeError (all shards unreadable would otherwise loop
    forever). While ``quiet`` (re-reading shards on resume) errors are neither logged nor counted: they
    were counted the first time.
    """

    def __init__(self, limit: int, where: str):
        self.limit = limit
        self.where = where
        self.pending = 0
        self.consecutive = 0
        self.quiet = False

    def __call__(self, exn: Exception) -> bool:
        if not self.quiet:
            logger.warning("skipping unreadable webdataset data: %s", exn)
            self.count()
        return True

    def count(self) -> None:
        """Record one skipped item."""
        self.pending += 1
        self.consecutive += 1
        if self.consecutive > self.limit:
            raise RuntimeError(f"{self.consecutive} unreadable items in a row in the shards {self.where}: "
                               f"check the files")

def decode_pair(sample: dict[str, Any]) -> tuple[Optional[Image.Image], Optional[str], str]:
    """(RGB image, caption, reason) of a raw webdataset sample; None and the reason if unusable."""
    key = sample.get("__key__")
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if data is None:
        return None, None, f"sample {key} has no image ({'/'.join(IMAGE_KEYS)})"
    caption = None
    if "txt" in sample:
        caption = sample["txt"].decode("utf-8", errors="replace")
    elif "json" in sample:
        try:
            caption = json.loads(sample["json"]).get("caption")
        except (ValueError, AttributeError):
            caption = None
    if not caption or not isinstance(caption, str):
        return None, None, f"sample {key} has no caption (txt or json 'caption')"
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB"), caption, ""
    except (OSError, ValueError, SyntaxError) as err:
        return None, None, f"sample {key}: unreadable image: {err}"


Key = tuple[int, int]


class ShardStream:
    """One endless, resumable stream: resampled shards -> samples in tar order -> shuffle buffer.

    ``next_item`` gives a processed sample, or None for a skipped shard, member or image.
    """

    def __init__(self, source: "ShardCaptionStream", seed: int):
        self.source = source
        self.seed = seed
        self.rng = random.Random(seed)
        self.buffer: list[tuple[Key, dict[str, Any]]] = []
        self.draw = -1
        self.member = 0
        self.members: Iterator[dict[str, Any]] = iter(())
        self.errors = SkipCounter(source.max_consecutive_errors,
                                  f"{source.shards[0]} ... ({len(source.shards)} shards)")

    def shard(self, draw: int) -> str:
        """The shard of draw ``draw`` (with replacement, from a generator seeded by the stream and draw)."""
        pick = np.random.default_rng([self.seed, draw]).integers(len(self.source.shards))
        return self.source.shards[int(pick)]

    def read(self, draw: int) -> Iterator[dict[str, Any]]:
        """The raw samples (members grouped by key) of draw ``draw``'s shard, errors to ``self.errors``."""
        return wds.tarfile_samples(iter([{"url": self.shard(draw)}]), handler=self.errors)

    def next_raw(self) -> tuple[Key, dict[str, Any]]:
        """The next raw sample and its name ``(draw, member)``, moving to the next draw at a shard's end."""
        empty = 0
        while True:
            sample = next(self.members, None)
            if sample is not None:
                self.member += 1
                return (self.draw, self.member - 1), sample
            if self.draw >= 0 and self.member == 0:
                empty += 1
                if empty > self.errors.limit:
                    raise RuntimeError(f"{empty} shards in a row without a sample in {self.errors.where}: "
                                       f"check the files")
            self.draw += 1
            self.member = 0
            self.members = self.read(self.draw)

    def next_item(self) -> Optional[dict[str, Any]]:
        """The next processed sample, or None for one skipped item."""
        capacity = max(self.source.shuffle_buffer, 1)
        initial = min(capacity, self.source.initial_buffer)
        while not self.errors.pending:
            self.buffer.append(self.next_raw())
            if len(self.buffer) < capacity:
                self.buffer.append(self.next_raw())
            if len(self.buffer) < initial:
                continue
            k = self.rng.randrange(len(self.buffer))
            self.buffer[k], self.buffer[-1] = self.buffer[-1], self.buffer[k]
            _, raw = self.buffer.pop()
            image, caption, reason = decode_pair(raw)
            if image is None:
                logger.warning("skipping %s (%s)", reason, raw.get("__url__"))
                self.errors.count()
                break
            self.errors.consecutive = 0
            return {"image": self.source.vis_processor(image), "text_input": self.source.text_processor(caption)}
        self.errors.pending -= 1
        return None

    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs to continue this stream exactly (no sample data)."""
        return {"seed": self.seed, "rng": self.rng.getstate(), "draw": self.draw, "member": self.member,
                "buffer": [key for key, _ in self.buffer], "pending": self.errors.pending,
                "consecutive": self.errors.consecutive}

    @classmethod
    def from_state(cls, source: "ShardCaptionStream", state: dict[str, Any]) -> "ShardStream":
        """The stream :meth:`state` described, its buffer re-read from the shards it names.

        RuntimeError if a shard no longer holds a buffered sample (the files changed since the save).
        """
        stream = cls(source, int(state["seed"]))
        stream.rng.setstate(state["rng"])
        keys = [tuple(key) for key in state["buffer"]]
        wanted: dict[int, set[int]] = {}
        for draw, member in keys:
            wanted.setdefault(draw, set()).add(member)
        found: dict[Key, dict[str, Any]] = {}
        stream.errors.quiet = True
        for draw in sorted(set(wanted) | ({state["draw"]} if state["draw"] >= 0 else set())):
            members = stream.read(draw)
            need = wanted.get(draw, set())
            stop = state["member"] if draw == state["draw"] else max(need) + 1
            for member in range(stop):
                sample = next(members, None)
                if sample is None:
                    break
                if member in need:
                    found[(draw, member)] = sample
            if draw == state["draw"]:
                stream.draw, stream.member, stream.members = draw, state["member"], members
        stream.errors.quiet = False
        lost = [key for key in keys if key not in found]
        if lost:
            raise RuntimeError(f"cannot resume the shard stream: buffered samples {lost[:4]} are no longer in "
                               f"their shards (e.g. {stream.shard(lost[0][0])}); the files changed since the save")
        stream.buffer = [(key, found[key]) for key in keys]
        stream.errors.pending = int(state["pending"])
        stream.errors.consecutive = int(state["consecutive"])
        return stream


class ShardCaptionStream(Dataset):
    """An endless, resampled, shuffled stream of image-caption samples, seen as a map-style dataset.

    Implements the stream-state protocol of ``lavis_evlgen.datasets.stream_state``: ``stream_state``
    and ``restart_streams``.
    """

    def __init__(self, shards: str | Sequence[str], num_samples: int, vis_processor: Callable,
                 text_processor: Callable, shuffle_buffer: int = 1000, seed: int = 0, rank: int = 0,
                 max_consecutive_errors: int = 1000, initial_buffer: int = 100):
        self.shards = expand_shards(shards)
        if not self.shards:
            raise ValueError(f"no shard named by {shards!r}")
        self.num_samples = int(num_samples)
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.shuffle_buffer = shuffle_buffer
        self.initial_buffer = initial_buffer
        self.seed = seed
        self.rank = rank
        self.max_consecutive_errors = max_consecutive_errors
        self._stream: Optional[ShardStream] = None
        self._resume: dict[int, dict[str, Any]] = {}
        self._worker_offset = 0

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        if self._stream is None:
            state = self._resume.get(logical_worker(self._worker_offset))
            self._stream = (ShardStream.from_state(self, state) if state is not None
                            else ShardStream(self, self.stream_seed()))
        return self._stream.next_item()

    def stream_seed(self) -> int:
        """Seed of this process's stream: the dataset seed, the rank and the loader's worker seed.

        The worker seed is PyTorch's base seed plus the logical worker (see ``logical_worker``), so a
        resumed loader's workers take up the streams of the workers whose batches they now produce.
        """
        info = torch.utils.data.get_worker_info()
        worker_seed = (info.seed - info.id + logical_worker(self._worker_offset) if info is not None
                       else torch.initial_seed())
        return int(torch.randint(2**31, (1,), generator=torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.rank) * 1_000_003 + worker_seed % 2**31)).item())

    def stream_state(self) -> Optional[dict[str, Any]]:
        """This process's stream position (None before its first sample)."""
        return None if self._stream is None else self._stream.state()

    def restart_streams(self, states: dict[int, dict[str, Any]], worker_offset: int) -> None:
        """Drop the current stream; the next item starts logical worker ``w``'s stream from ``states[w]``
        (a fresh stream where absent). Call before the data-loader iterator starts its workers."""
        self._stream = None
        self._resume = dict(states)
        self._worker_offset = worker_offset

    def collater(self, samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        return collate_skipping(samples)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stream"] = None
        return state
