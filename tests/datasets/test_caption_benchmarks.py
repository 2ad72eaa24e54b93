"""COCO / Flickr30K / NoCaps builders on tiny files in the official formats, broken images included."""
from __future__ import annotations

import json
import os

import pytest
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.datasets.caption_formats import image_id_from_name, read_eval, read_train
from tests.datasets.benchmark_fixtures import (
    FLICKR,
    KARPATHY_COCO,
    NOCAPS,
    write_coco,
    write_flickr,
    write_json,
    write_nocaps,
)

PROCESSORS = {"vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32},
                                "eval": {"name": "blip_image_eval", "image_size": 32}}}


def build(name: str, root, config: str = "defaults", **build_info):
    cfg = OmegaConf.load(config_path(f"datasets/{name}/{config}.yaml")).datasets[name]
    cfg = OmegaConf.merge(cfg, PROCESSORS, {"build_info": {"root": str(root), "derived_dir": str(root / "derived"),
                                                           **build_info}})
    return registry.get_builder_class(name)(cfg).build_datasets()


def batch_of(dataset):
    return dataset.collater([dataset[i] for i in range(len(dataset))])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    write_coco(root)
    write_flickr(root)
    write_nocaps(root)
    return root


def test_coco_karpathy_splits_and_derived_ground_truth(root):
    datasets = build("evlgen_coco_caption", root)
    train, test = datasets["train"], datasets["test"]
    assert len(train) == 3 and [ann["caption"] for ann in train.annotation][0] == "a cat on a mat"
    assert sorted(train.img_ids.values()) == [0, 1]
    assert [a["image_id"] for a in test.annotation] == [31, 32, 33]
    gt = json.loads(open(test.gt_file).read())
    assert sorted(img["id"] for img in gt["images"]) == [31, 32, 33]
    assert sorted(a["caption"] for a in gt["annotations"] if a["image_id"] == 32) == sorted(KARPATHY_COCO[4][3])
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])
    assert [a["image_id"] for a in datasets["val"].annotation] == [21]

    batch = batch_of(test)
    assert batch["n_skipped"] == 1
    assert batch["image"].shape == (2, 3, 32, 32) and batch["image_id"].tolist() == [31, 32]
    train_batch = batch_of(train)
    assert train_batch["n_skipped"] == 0 and train_batch["text_input"][0] == "a cat on a mat"


def test_derived_ground_truth_is_written_once(root):
    first = build("evlgen_coco_caption", root, config="eval")["test"].gt_file
    written = os.stat(first).st_mtime_ns
    again = build("evlgen_coco_caption", root, config="eval")["test"].gt_file
    assert again == first and os.stat(again).st_mtime_ns == written


def test_coco_train_type_builds_the_training_split_only(root):
    datasets = build("evlgen_coco_caption", root, config="train")
    assert list(datasets) == ["train"] and len(datasets["train"]) == 3


def test_karpathy_train_includes_restval(root):
    entries = read_train("karpathy", str(root / "coco/annotations/dataset_coco.json"))
    assert sorted({e["image_id"] for e in entries}) == [11, 12]
    assert entries[0] == {"image": "train2014/COCO_train2014_000000000011.jpg", "caption": "a cat on a mat",
                          "image_id": 11}


def test_coco_format_file_is_its_own_ground_truth(root):
    path = str(root / "coco/annotations/captions_val2014.json")
    captions = read_eval("coco", path, "val")
    assert [e["image_id"] for e in captions.entries] == [12, 21, 31, 32, 33]
    assert captions.entries[0]["image"] == "COCO_val2014_000000000012.jpg"
    train = read_train("coco", path)
    assert len(train) == sum(len(c) for i, f, _, c, _ in KARPATHY_COCO if f == "val")


def test_lavis_eval_list_takes_ids_from_file_names(tmp_path):
    path = write_json(tmp_path / "test.json", [{"image": "val2014/COCO_val2014_000000391895.jpg",
                                                "caption": ["a man", "a person"]},
                                               {"image": "flickr30k-images/1007129816.jpg", "caption": ["a dog"]}])
    captions = read_eval("lavis", str(path), "test")
    assert [e["image_id"] for e in captions.entries] == [391895, 1007129816]
    assert [a["caption"] for a in captions.gt["annotations"]] == ["a man", "a person", "a dog"]
    with pytest.raises(ValueError, match="image id"):
        image_id_from_name("images/no_digits.jpg")


def test_flickr_test_split_uses_flickr_ids(root):
    test = build("evlgen_flickr30k_caption", root)["test"]
    expected = [int(name[:-4]) for name, split, _, _ in FLICKR if split == "test"]
    assert [a["image_id"] for a in test.annotation] == expected
    gt = json.loads(open(test.gt_file).read())
    assert {a["image_id"] for a in gt["annotations"]} == set(expected)
    assert batch_of(test)["n_skipped"] == 1


def test_nocaps_domains_and_official_ground_truth(root):
    val = build("evlgen_nocaps", root)["val"]
    assert val.gt_file == str(root / "nocaps/annotations/nocaps_val_4500_captions.json")
    assert val.domains == {i: d for i, d, _, _ in NOCAPS}
    batch = batch_of(val)
    assert batch["n_skipped"] == 1 and batch["image_id"].tolist() == [0, 1, 2, 4, 5]
    assert isinstance(batch["image"], torch.Tensor)


def test_missing_file_and_bad_format_name_the_config_key(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="build_info.annotations.test.storage"):
        build("evlgen_flickr30k_caption", tmp_path, images={"storage": str(root)})
    with pytest.raises(ValueError, match="build_info.annotations.test.format"):
        build("evlgen_flickr30k_caption", root, annotations={"test": {"format": "csv"}})
    with pytest.raises(ValueError, match="build_info.annotations.test: cannot read"):
        build("evlgen_flickr30k_caption", root, annotations={"test": {"format": "coco"}})
