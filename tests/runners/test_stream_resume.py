"""Exact resume of webdataset shard streams through the runner's training loader.

A loader stopped after k batches, saved with ``state_dict`` and restored into a fresh loader (a new
"process") must hand out the same next batches as the uninterrupted loader: same samples, same
skips, same order, with and without data-loader workers, across a data-epoch boundary, and for a
mixture of two streams (one state per source).
"""
from __future__ import annotations

import pickle

import pytest
import torch

from lavis_evlgen.datasets.datasets.webdataset_shards import ShardCaptionStream, ShardStream
from lavis_evlgen.runners.ratio_loader import RatioTrainLoader
from lavis_evlgen.runners.train_loader import ResumableTrainLoader
from tests.datasets.benchmark_fixtures import write_shards


def shard_stream(pattern: str, buffer: int = 6, seed: int = 7, num_samples: int = 24) -> ShardCaptionStream:
    return ShardCaptionStream(pattern, num_samples=num_samples, text_processor=str, shuffle_buffer=buffer, seed=seed,
                              vis_processor=lambda im: torch.tensor(im.getpixel((0, 0))), initial_buffer=3)


def loader(dataset, workers: int) -> ResumableTrainLoader:
    return ResumableTrainLoader(dataset, getattr(dataset, "collater", None), 4, workers, seed=3, rank=0,
                                world_size=1, pin_memory=False)


def summary(batch: dict) -> tuple:
    return tuple(batch.get("text_input", [])), batch["n_skipped"], batch.get("image", torch.zeros(0)).tolist()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, n_shards=3, per_shard=5)
    return str(root / "laion/{00000..00002}.tar")


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_stream_resumes_exactly_mid_epoch_and_across_epochs(shards, workers):
    # 24 nominal samples / 4 per batch = 6 batches per data epoch; stop at 5 (odd: worker offset 1) and 8.
    full = loader(shard_stream(shards), workers)
    reference = [summary(next(full)) for _ in range(12)]
    assert sum(b[1] for b in reference) > 0  # the corrupt images are skipped and counted
    assert len({b[0] for b in reference}) == 12  # the stream moves on (no batch repeats)
    for stop in (5, 8):
        first = loader(shard_stream(shards), workers)
        head = [summary(next(first)) for _ in range(stop)]
        saved = pickle.loads(pickle.dumps(first.state_dict()))
        assert len(saved["streams"]) == min(max(workers, 1), stop % 6 or 6)
        resumed = loader(shard_stream(shards), workers)
        resumed.load_state_dict(saved)
        tail = [summary(next(resumed)) for _ in range(12 - stop)]
        assert head + tail == reference, f"stopped after {stop} batches"


def test_shard_stream_state_is_small_and_names_buffered_samples(shards):
    dataset = shard_stream(shards, buffer=5)
    items = [dataset[k] for k in range(9)]
    state = dataset.stream_state()
    assert len(state["buffer"]) == 4 and all(len(key) == 2 for key in state["buffer"])
    assert len(pickle.dumps(state)) < 16_000
    again = ShardStream.from_state(dataset, state)
    more = [dataset[k] for k in range(9, 30)]
    copy = [again.next_item() for _ in range(21)]
    texts = [[s and s["text_input"] for s in seq] for seq in (more, copy)]
    assert texts[0] == texts[1] and None in texts[0] and items


def test_resume_after_the_shard_files_changed_is_a_clear_error(tmp_path):
    write_shards(tmp_path, n_shards=1, per_shard=6)
    dataset = shard_stream(str(tmp_path / "laion/00000.tar"), buffer=4)
    for k in range(3):
        dataset[k]
    state = dataset.stream_state()
    write_shards(tmp_path, n_shards=1, per_shard=1)
    with pytest.raises(RuntimeError, match="files changed since the save"):
        ShardStream.from_state(dataset, state)


def test_ratio_mixture_of_two_streams_keeps_one_state_per_source(shards):
    def mixture():
        streams = {"a": loader(shard_stream(shards, seed=1), 0), "b": loader(shard_stream(shards, seed=2), 0)}
        return RatioTrainLoader(streams, {"a": 1.0, "b": 1.0}, seed=5, rank=0, world_size=1)

    def take(stream, steps):
        return [summary(next(stream.source(step, 0))) for step in steps]

    reference = take(mixture(), range(9))
    first = mixture()
    head = take(first, range(4))
    saved = first.state_dict()
    assert all(position["streams"][0][0] is not None for position in saved["datasets"].values())
    resumed = mixture()
    resumed.load_state_dict(saved)
    assert head + take(resumed, range(4, 9)) == reference
    untouched = mixture()
    untouched.load_state_dict(saved)
    assert untouched.state_dict() == saved  # a source not read before the next save keeps its position
    portable = RatioTrainLoader.portable(saved)
    assert {name: set(p) for name, p in portable["datasets"].items()} == {"a": {"epoch", "samples"},
                                                                          "b": {"epoch", "samples"}}


def test_another_worker_count_starts_new_streams_with_a_warning(shards, caplog):
    first = loader(shard_stream(shards), 0)
    for _ in range(2):
        next(first)
    resumed = loader(shard_stream(shards), 1)
    resumed.load_state_dict(first.state_dict())
    assert "saved with run.num_workers=0, resuming with 1: they start anew" in caplog.text
    assert resumed.state_dict()["samples"] == 8 and summary(next(resumed))[1] >= 0
