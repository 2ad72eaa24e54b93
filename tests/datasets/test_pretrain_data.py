"""Pre-training data: CapFilt lists (packed records) and webdataset shards."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.data_order import SeededSampleDataset
from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.datasets.records import PackedRecords
from lavis_evlgen.datasets.datasets.webdataset_shards import ShardCaptionStream, decode_pair, expand_shards
from tests.datasets.benchmark_fixtures import image_bytes, write_capfilt, write_json, write_shards

PROCESSORS = {"vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32}}}


def builder_config(name: str, root, **build_info):
    cfg = OmegaConf.load(config_path(f"datasets/{name}/defaults.yaml")).datasets[name]
    return OmegaConf.merge(cfg, PROCESSORS, {"build_info": {"root": str(root), **build_info}})


def build(name: str, root, **build_info):
    return registry.get_builder_class(name)(builder_config(name, root, **build_info)).build_datasets()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    write_capfilt(root)
    return root


def test_packed_records_round_trip_and_cache(tmp_path):
    records = [{"image": f"{k}.jpg", "caption": ["ü", "x"] if k % 2 else f"caption {k}"} for k in range(5)]
    part1, part2 = write_json(tmp_path / "p1.json", records[:3]), write_json(tmp_path / "p2.json", records[3:])
    packed = PackedRecords.from_json_lists([str(part1), str(part2)], tmp_path / "cache")
    assert len(packed) == 5 and [packed[k] for k in range(5)] == records and packed[-1] == records[-1]
    with pytest.raises(IndexError):
        packed[5]
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and isinstance(packed.blob, np.memmap)
    again = PackedRecords.from_json_lists([str(part1), str(part2)], tmp_path / "cache")
    assert list(again) == records and list((tmp_path / "cache").iterdir()) == folders
    write_json(tmp_path / "p2.json", records[3:4])
    assert len(PackedRecords.from_json_lists([str(part1), str(part2)], tmp_path / "cache")) == 4


def test_capfilt_skips_unreadable_images_and_draws_captions(root, tmp_path):
    train = build("evlgen_capfilt_ccs", root, annotations={"train": {"storage": "capfilt/ccs.json"}},
                  images={"storage": "capfilt/images"}, records_dir=str(tmp_path / "records"))["train"]
    assert len(train) == 5
    samples = [train[k] for k in range(5)]
    assert samples[3] is None and samples[4] is None
    assert samples[0]["text_input"] == "a photo of a lake" and samples[2]["text_input"] == "an absolute path"
    seen = {SeededSampleDataset(train, seed=s)[1]["text_input"] for s in range(12)}
    assert seen == {"a mountain at dusk", "snowy peaks"}
    batch = train.collater(samples)
    assert batch["n_skipped"] == 2 and batch["image"].shape == (3, 3, 32, 32)


def test_capfilt_globs_and_missing_files(root, tmp_path):
    write_json(root / "capfilt/parts/part_0.json", [{"image": "a.jpg", "caption": "one"}])
    write_json(root / "capfilt/parts/part_1.json", [{"image": "b.jpg", "caption": "two"}])
    train = build("evlgen_capfilt_laion", root, annotations={"train": {"storage": "capfilt/parts/part_*.json"}},
                  images={"storage": "capfilt/images"}, records_dir=str(tmp_path / "records"))["train"]
    assert [train[k]["text_input"] for k in range(2)] == ["one", "two"]
    with pytest.raises(FileNotFoundError, match="build_info.annotations.train.storage"):
        build("evlgen_capfilt_laion", root, annotations={"train": {"storage": "capfilt/none_*.json"}},
              images={"storage": "capfilt/images"}, records_dir=str(tmp_path / "records"))


def test_brace_expansion():
    assert expand_shards("d/{000..002}.tar") == ["d/000.tar", "d/001.tar", "d/002.tar"]
    assert expand_shards(["a/{0..1}.tar", "b/x.tar"]) == ["a/0.tar", "a/1.tar", "b/x.tar"]
    assert expand_shards("a.tar::b.tar") == ["a.tar", "b.tar"]


def test_shard_stream_counts_corrupt_images(tmp_path):
    info = write_shards(tmp_path)
    stream = ShardCaptionStream(str(tmp_path / info["pattern"]), num_samples=100,
                                vis_processor=lambda im: torch.zeros(3, 4, 4), text_processor=str.upper,
                                shuffle_buffer=1, seed=1)
    items = [stream[k] for k in range(80)]
    good = [s for s in items if s is not None]
    assert items.count(None) == 20 and len(good) == 60
    assert all(s["text_input"].startswith("CAPTION 0") and not s["text_input"].endswith("3") for s in good)
    batch = stream.collater(items[:16])
    assert batch["n_skipped"] == items[:16].count(None) and batch["image"].shape[0] == 16 - batch["n_skipped"]


def test_decode_pair_reasons():
    good = {"__key__": "k", "jpg": image_bytes(1), "json": b'{"caption": "a cat"}'}
    image, caption, _ = decode_pair(good)
    assert image.size == (32, 32) and caption == "a cat"
    for broken, reason in (({"__key__": "k", "txt": b"x"}, "no image"),
                           ({"__key__": "k", "jpg": image_bytes(1), "json": b"{not json"}, "no caption"),
                           ({"__key__": "k", "png": b"garbage", "txt": b"x"}, "unreadable image")):
        image, caption, why = decode_pair(broken)
        assert image is None and caption is None and reason in why


def test_shard_stream_counts_truncated_shards_and_goes_on(tmp_path, caplog):
    write_shards(tmp_path)
    stream = ShardCaptionStream([str(tmp_path / "laion/truncated.tar"), str(tmp_path / "laion/00001.tar")],
                                num_samples=100, vis_processor=lambda im: 0, text_processor=str, shuffle_buffer=1)
    items = [stream[k] for k in range(60)]
    good = [s["text_input"] for s in items if s is not None]
    assert good and all(text.startswith("caption 00001") for text in good)
    truncation_errors = [r for r in caplog.records if "unexpected end of data" in r.getMessage()]
    corrupt_images = [r for r in caplog.records if "unreadable image" in r.getMessage()]
    logged = len(truncation_errors) + len(corrupt_images)
    assert truncation_errors and corrupt_images
    assert 0 <= logged - items.count(None) <= 3  # the shuffle stage reads one sample ahead


def test_shard_stream_is_reproducible_and_differs_by_rank(tmp_path):
    info = write_shards(tmp_path)

    def keys(rank: int, seed: int = 1) -> list:
        stream = ShardCaptionStream(str(tmp_path / info["pattern"]), num_samples=10, vis_processor=lambda im: 0,
                                    text_processor=str, shuffle_buffer=8, seed=seed, rank=rank)
        torch.manual_seed(0)
        return [s and s["text_input"] for s in (stream[k] for k in range(30))]

    assert keys(0) == keys(0)
    assert keys(0) != keys(1) and keys(0) != keys(0, seed=2)


def test_shard_stream_in_workers_gives_distinct_streams(tmp_path):
    info = write_shards(tmp_path, n_shards=3)
    stream = ShardCaptionStream(str(tmp_path / info["pattern"]), num_samples=24, vis_processor=lambda im: 0,
                                text_processor=str, shuffle_buffer=4, seed=3)
    loader = DataLoader(stream, batch_size=4, num_workers=2, collate_fn=stream.collater,
                        generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(batches) == 6
    assert sum(len(b.get("text_input", [])) + b["n_skipped"] for b in batches) == 24
    first_of_each_worker = [b["text_input"] for b in batches[:2]]
    assert first_of_each_worker[0] != first_of_each_worker[1]


def test_shards_builder_leaves_out_absent_shards(tmp_path):
    write_shards(tmp_path, n_shards=2)
    train = build("laion115M", tmp_path, shards="laion/{00000..00003}.tar", num_samples=50)["train"]
    assert len(train) == 50 and [p.rsplit("/", 1)[1] for p in train.shards] == ["00000.tar", "00001.tar"]
    with pytest.raises(FileNotFoundError, match="build_info.shards"):
        build("ccs14M", tmp_path, shards="none/{0..3}.tar", num_samples=5)


def test_all_shards_unreadable_raises_instead_of_looping(tmp_path):
    (tmp_path / "bad.tar").write_bytes(b"not a tar file at all" * 10)
    stream = ShardCaptionStream(str(tmp_path / "bad.tar"), num_samples=5, vis_processor=str, text_processor=str,
                                max_consecutive_errors=20)
    with pytest.raises(RuntimeError, match="unreadable items in a row"):
        for k in range(100):
            stream[k]
