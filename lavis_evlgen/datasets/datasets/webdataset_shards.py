"""Image-caption pairs streamed from webdataset tar shards (LAION-115M, CC+SBU), LAVIS LaionDataset style.

Shards are named by brace patterns (``laion/{00000..11499}.tar``, several joined by ``::`` or given as a
list), drawn with replacement (``ResampledShards``) and their samples shuffled in a buffer. Each sample
is ``<key>.jpg`` (or png / jpeg / webp) plus ``<key>.txt`` or ``<key>.json`` with a ``caption``.

runner_evlgen reads map-style datasets, so :class:`ShardCaptionStream` is one: its length is the
nominal number of samples (what size-weighting and the epoch length use) and item ``i`` is simply
the next sample of this process's stream, whatever ``i`` is. Each data-loader worker of each rank
streams with its own seed, taken from the worker seed PyTorch derives from the loader's generator
(seeded per epoch by the runner) and the rank, so streams differ between workers and epochs and a
rerun with the same seed reads the same samples. A resumed run starts new streams (the position in
an endless resampled stream is not saved).

Unreadable shards, members and images are skipped and counted: every error becomes a ``None`` item,
which :func:`collate_skipping` drops and counts under ``n_skipped``.
"""
from __future__ import annotations

import io
import json
import logging
import random
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import Dataset
from webdataset.shardlists import expand_source

from lavis_evlgen.datasets.datasets.caption import collate_skipping

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def expand_shards(shards: str | Sequence[str]) -> list[str]:
    """Every shard path named by brace patterns (``a/{000..009}.tar``), ``::``-joined or listed."""
    if isinstance(shards, str):
        return expand_source(shards)
    return [path for pattern in shards for path in expand_source(pattern)]


class SkipCounter:
    """A webdataset error handler that logs the error, counts it and continues.

    ``pending`` counts errors not yet reported; more than ``limit`` errors in a row without a good
    sample in between raise RuntimeError (all shards unreadable would otherwise loop forever).
    """

    def __init__(self, limit: int, where: str):
        self.limit = limit
        self.where = where
        self.pending = 0
        self.consecutive = 0

    def __call__(self, exn: Exception) -> bool:
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


class ShardCaptionStream(Dataset):
    """An endless, resampled, shuffled stream of image-caption samples, seen as a map-style dataset."""

    def __init__(self, shards: str | Sequence[str], num_samples: int, vis_processor: Callable,
                 text_processor: Callable, shuffle_buffer: int = 1000, seed: int = 0, rank: int = 0,
                 max_consecutive_errors: int = 1000):
        self.shards = expand_shards(shards)
        if not self.shards:
            raise ValueError(f"no shard named by {shards!r}")
        self.num_samples = int(num_samples)
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.max_consecutive_errors = max_consecutive_errors
        self._stream: Optional[Iterator[Optional[dict[str, Any]]]] = None

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        if self._stream is None:
            self._stream = self.samples(self.stream_seed())
        return next(self._stream)

    def stream_seed(self) -> int:
        """Seed of this process's stream: the dataset seed, the rank and the loader's worker seed."""
        info = torch.utils.data.get_worker_info()
        worker_seed = info.seed if info is not None else torch.initial_seed()
        return int(torch.randint(2**31, (1,), generator=torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.rank) * 1_000_003 + worker_seed % 2**31)).item())

    def pipeline(self, seed: int, errors: SkipCounter) -> wds.DataPipeline:
        """Raw samples: resampled shards -> tar members grouped by key -> shuffle buffer."""
        return wds.DataPipeline(
            wds.ResampledShards(self.shards, seed=seed, worker_seed=lambda: seed, deterministic=True),
            wds.tarfile_to_samples(handler=errors),
            wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), rng=random.Random(seed)),
        )

    def samples(self, seed: int) -> Iterator[Optional[dict[str, Any]]]:
        """Processed samples, with a ``None`` for every skipped shard, member or image."""
        errors = SkipCounter(self.max_consecutive_errors, f"{self.shards[0]} ... ({len(self.shards)} shards)")
        for raw in self.pipeline(seed, errors):
            image, caption, reason = decode_pair(raw)
            if image is None:
                logger.warning("skipping %s (%s)", reason, raw.get("__url__"))
                errors.count()
            else:
                errors.consecutive = 0
            skipped, errors.pending = errors.pending, 0
            for _ in range(skipped):
                yield None
            if image is not None:
                yield {"image": self.vis_processor(image), "text_input": self.text_processor(caption)}

    def collater(self, samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        return collate_skipping(samples)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stream"] = None
        return state
