"""The registered builders build through LAVIS's registry, with the keys and shapes LAVIS's tasks use."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf
from pycocotools.coco import COCO

from lavis_evlgen.datasets.generate.photos import PHOTOS

SHAPES_TINY = {"n_train": 8, "n_val": 3, "n_test": 4, "image_size": 64}


def test_default_configs_point_into_the_cache():
    for name in ("shapes_caption", "skimage_photos", "easy_vqa"):
        cls = registry.get_builder_class(name)
        cfg = OmegaConf.load(cls.default_config_path()).datasets[name]
        assert cfg.build_info.images.storage.startswith("data/") and "root" not in cfg.build_info


def test_shapes_caption_builds_and_generates_on_first_use(tmp_path, dataset_config):
    cfg = dataset_config("shapes_caption", tmp_path, **SHAPES_TINY)
    datasets = registry.get_builder_class("shapes_caption")(cfg).build_datasets()
    assert set(datasets) == {"train", "val", "test"}
    assert (tmp_path / "data" / "shapes" / "manifest.json").is_file()
    train = datasets["train"]
    assert len(train) == len(json.loads((tmp_path / "data/shapes/train.json").read_text())) >= 3 * 8
    sample = train[0]
    assert set(sample) == {"image", "text_input", "image_id"}
    assert sample["image"].shape == (3, 224, 224) and sample["text_input"].startswith("a ")
    batch = train.collater([train[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 224, 224) and batch["n_skipped"] == 0
    for split, n in (("val", 3), ("test", 4)):
        ds = datasets[split]
        assert len(ds) == n and set(ds[0]) == {"image", "image_id", "instance_id"}
        assert sorted(COCO(ds.gt_file).getImgIds()) == sorted(ds[i]["image_id"] for i in range(n))


def test_corrupt_image_is_skipped_and_counted(tmp_path, dataset_config):
    cfg = dataset_config("shapes_caption", tmp_path, **SHAPES_TINY)
    builder = registry.get_builder_class("shapes_caption")
    builder(cfg).build_datasets()
    (tmp_path / "data/shapes/images/val/000001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    val = builder(cfg).build_datasets()["val"]
    samples = [val[i] for i in range(len(val))]
    assert samples[1] is None
    batch = val.collater(samples)
    assert batch["n_skipped"] == 1 and batch["image"].shape[0] == 2
    assert 1_000_001 not in batch["image_id"].tolist()


def test_unknown_generate_key_names_the_config_key(tmp_path, dataset_config):
    cfg = dataset_config("shapes_caption", tmp_path, n_images=5)
    with pytest.raises(ValueError, match="build_info.generate"):
        registry.get_builder_class("shapes_caption")(cfg).build_datasets()


def test_missing_file_names_the_config_key(tmp_path, dataset_config):
    cfg = dataset_config("shapes_caption", tmp_path, **SHAPES_TINY)
    cfg.build_info.annotations.val.gt = "data/shapes/nowhere_gt.json"
    with pytest.raises(FileNotFoundError, match="build_info.annotations.val.gt"):
        registry.get_builder_class("shapes_caption")(cfg).build_datasets()


def test_skimage_photos_builds_every_photo(tmp_path, dataset_config):
    cfg = dataset_config("skimage_photos", tmp_path)
    datasets = registry.get_builder_class("skimage_photos")(cfg).build_datasets()
    assert set(datasets) == {"val", "test"}
    test = datasets["test"]
    assert len(test) == len(PHOTOS) == 17
    batch = test.collater([test[i] for i in range(len(test))])
    assert batch["image"].shape == (17, 3, 224, 224) and batch["n_skipped"] == 0
    coco = COCO(test.gt_file)
    assert all(len(coco.getAnnIds(imgIds=[i])) == 3 for i in coco.getImgIds())
    assert not torch.allclose(batch["image"][0], batch["image"][1])


def test_easy_vqa_builds_vqa_splits(tmp_path, dataset_config):
    cfg = dataset_config("easy_vqa", tmp_path, n_train=12, n_val=5, n_test=6, val_images=20)
    datasets = registry.get_builder_class("easy_vqa")(cfg).build_datasets()
    train, val, test = datasets["train"], datasets["val"], datasets["test"]
    assert (len(train), len(val), len(test)) == (12, 5, 6)
    sample = train[0]
    assert set(sample) == {"image", "text_input", "answers", "weights"}
    assert sample["image"].shape == (3, 224, 224) and sample["weights"] == [1.0]
    batch = train.collater([train[i] for i in range(3)])
    assert set(batch) == {"image", "text_input", "answer", "weight", "n_answers", "n_skipped"}
    assert batch["n_answers"].tolist() == [1, 1, 1] and len(batch["answer"]) == 3
    batch = test.collater([test[i] for i in range(3)])
    assert set(batch) == {"image", "text_input", "question_id", "instance_id", "answer", "n_skipped"}
    assert batch["question_id"].dtype == torch.int64
    for ds in (val, test):
        assert Path(ds.coco_fmt_qust_file).is_file() and Path(ds.coco_fmt_anno_file).is_file()
        assert len(ds.answer_list) == 13


def test_easy_vqa_corrupt_training_image_is_skipped(tmp_path, dataset_config):
    cfg = dataset_config("easy_vqa", tmp_path, n_train=4, n_val=2, n_test=2, val_images=10)
    builder = registry.get_builder_class("easy_vqa")
    train = builder(cfg).build_datasets()["train"]
    (tmp_path / "data/easy_vqa" / train.annotation[0]["image"]).write_bytes(b"not an image")
    batch = train.collater([train[i] for i in range(len(train))])
    assert batch["n_skipped"] == sum(a["image"] == train.annotation[0]["image"] for a in train.annotation)
    assert batch["image"].shape[0] == 4 - batch["n_skipped"]
