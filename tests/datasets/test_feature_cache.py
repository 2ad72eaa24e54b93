"""Frozen-feature cache: same features and same loss as from images; reused; corrupt images skipped."""
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen
from lavis_evlgen.datasets.feature_cache import CachedFeaturesDataset, cache_features


def shapes_datasets(dataset_config, root):
    cfg = dataset_config("shapes_caption", root, n_train=8, n_val=2, n_test=2, image_size=48)
    for split in ("train", "eval"):
        cfg.vis_processor[split] = OmegaConf.create({"name": "blip_image_eval", "image_size": 32})
    return registry.get_builder_class("shapes_caption")(cfg).build_datasets()


def test_cached_step_gives_the_same_loss(tmp_path, dataset_config):
    torch.manual_seed(0)
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen_opt", "tiny", is_eval=True)
    train = shapes_datasets(dataset_config, tmp_path / "data")["train"]
    folder = cache_features(train, model.vision_features, "tiny", tmp_path / "cache", batch_size=3,
                            progress=False)
    cached = CachedFeaturesDataset(train, folder)
    assert len(cached) == len(train)
    images = train.collater([train[i] for i in range(4)])
    feats = cached.collater([cached[i] for i in range(4)])
    assert feats["text_input"] == images["text_input"]
    assert torch.equal(feats["image_features"], model.vision_features(images["image"]))
    loss_images = model({"image": images["image"], "text_input": images["text_input"]})["loss"]
    loss_cached = model({"image_features": feats["image_features"], "text_input": feats["text_input"]})["loss"]
    assert torch.equal(loss_images, loss_cached)


def test_cache_is_reused_and_keyed_by_encoder(tmp_path, dataset_config):
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen_opt", "tiny", is_eval=True)
    train = shapes_datasets(dataset_config, tmp_path / "data")["train"]
    calls = []

    def encode(x):
        calls.append(len(x))
        return model.vision_features(x)

    first = cache_features(train, encode, "tiny", tmp_path / "cache", progress=False)
    n = len(calls)
    assert n > 0
    assert cache_features(train, encode, "tiny", tmp_path / "cache", progress=False) == first
    assert len(calls) == n
    assert cache_features(train, encode, "other-encoder", tmp_path / "cache", progress=False) != first


def test_corrupt_image_is_skipped_and_counted(tmp_path, dataset_config):
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen_opt", "tiny", is_eval=True)
    train = shapes_datasets(dataset_config, tmp_path / "data")["train"]
    bad = train.annotation[0]["image"]
    (tmp_path / "data" / "data" / "shapes" / bad).write_bytes(b"not an image")
    cached = CachedFeaturesDataset(train, cache_features(train, model.vision_features, "tiny",
                                                         tmp_path / "cache", progress=False))
    batch = cached.collater([cached[i] for i in range(len(cached))])
    n_bad = sum(a["image"] == bad for a in train.annotation)
    assert batch["n_skipped"] == n_bad >= 1
    assert len(batch["text_input"]) == len(cached) - n_bad
