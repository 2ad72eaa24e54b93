"""Video caption builders on tiny real video files written here, including broken and too-short ones."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf
from pycocotools.coco import COCO

import lavis_evlgen  # noqa: F401
from lavis_evlgen.datasets.datasets.video_caption import frame_indices, load_clip
from lavis_evlgen.datasets.generate.video_files import write_mp4
from tests.datasets.benchmark_fixtures import SIZE, ramp, write_webvid

FRAMES = 4


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Derived ground-truth files go to a temporary cache, not the repository's."""
    monkeypatch.setenv("EVLGEN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def video_root(tmp_path) -> Path:
    """``videos/``: two good 24-frame clips, a 2-frame clip, a garbage file and a truncated mp4."""
    videos = tmp_path / "videos"
    write_mp4(videos / "good0.mp4", ramp(24))
    write_mp4(videos / "good1.mp4", ramp(24)[::-1])
    write_mp4(videos / "short.mp4", ramp(2))
    (videos / "garbage.mp4").write_bytes(b"not a video at all" * 50)
    full = (videos / "good0.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(full[: len(full) // 3])
    train = [{"video": f"{name}.mp4", "caption": f"clip {name}", "image_id": name}
             for name in ("good0", "good1", "short", "garbage", "truncated")]
    val = [{"video": "good0.mp4", "image_id": 0, "caption": ["a clip getting brighter", "grey frames"]},
           {"video": "garbage.mp4", "image_id": 1, "caption": ["nothing"]}]
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "val.json").write_text(json.dumps(val))
    return tmp_path


def msrvtt_config(root: Path) -> OmegaConf:
    proc = {"name": "alpro_video_eval", "image_size": SIZE, "n_frms": FRAMES}
    return OmegaConf.create({
        "data_type": "videos",
        "build_info": {"root": str(root), "annotations": {"train": {"storage": "train.json"},
                                                          "val": {"storage": "val.json"}},
                       "videos": {"storage": "videos"}},
        "vis_processor": {"train": {**proc, "sampling": "random"}, "eval": {**proc, "sampling": "uniform"}},
        "text_processor": {"train": {"name": "blip_caption"}, "eval": {"name": "blip_caption"}},
    })


def test_frame_indices_uniform_centres_and_random_within_segments():
    assert frame_indices(24, 4, "uniform").tolist() == [3, 9, 15, 21]
    torch.manual_seed(0)
    draws = np.stack([frame_indices(24, 4, "random") for _ in range(200)])
    segment = np.arange(4) * 6
    assert ((draws >= segment) & (draws < segment + 6)).all()
    assert len(np.unique(draws[:, 0])) == 6  # every frame of a segment gets drawn
    torch.manual_seed(0)
    assert (frame_indices(24, 4, "random") == draws[0]).all()  # torch's RNG: reproducible, resumable
    with pytest.raises(ValueError, match="sampling"):
        frame_indices(24, 4, "headtail")


def test_uniform_loading_reads_the_centre_frames(video_root):
    clip = load_clip(str(video_root / "videos/good0.mp4"), FRAMES, SIZE, "uniform")
    assert clip.shape == (3, FRAMES, SIZE, SIZE) and clip.dtype == torch.float32
    means = clip.mean(dim=(0, 2, 3))
    torch.testing.assert_close(means, torch.tensor([3.0, 9.0, 15.0, 21.0]) * 8, atol=3.0, rtol=0)


def test_builder_skips_and_counts_broken_and_short_videos(video_root, caplog):
    datasets = registry.get_builder_class("evlgen_msrvtt_caption")(msrvtt_config(video_root)).build_datasets()
    train = datasets["train"]
    assert train.n_frms == FRAMES and train.sampling == "random" and datasets["val"].sampling == "uniform"
    samples = [train[i] for i in range(len(train))]
    assert [s is None for s in samples] == [False, False, True, True, True]
    assert "fewer than the 4 sampled" in caplog.text and "garbage.mp4" in caplog.text
    batch = train.collater(samples)
    assert batch["video"].shape == (2, 3, FRAMES, SIZE, SIZE)  # [B, C, N, H, W]
    assert batch["n_skipped"] == 3 and batch["text_input"] == ["clip good0", "clip good1"]
    good0 = samples[0]["video"]
    assert good0.mean(dim=(0, 2, 3)).diff().gt(0).all()  # frames in time order (getting brighter)


def test_eval_split_without_gt_derives_it_from_its_captions(video_root, tmp_path):
    val = registry.get_builder_class("evlgen_msvd_caption")(msrvtt_config(video_root)).build_datasets()["val"]
    assert val.gt_file.startswith(str(tmp_path / "cache"))
    coco = COCO(val.gt_file)
    assert sorted(coco.getImgIds()) == [0, 1] and len(coco.getAnnIds(imgIds=[0])) == 2
    sample = val[0]
    assert set(sample) == {"video", "image_id", "instance_id"} and sample["video"].shape == (3, FRAMES, SIZE, SIZE)
    assert val[1] is None


def test_webvid_csv_is_read_with_the_video_template(video_root, tmp_path):
    write_webvid(video_root / "webvid.csv", video_root / "videos")
    cfg = msrvtt_config(video_root)
    cfg.build_info.annotations = {"train": {"storage": "webvid.csv"}}
    train = registry.get_builder_class("webvid2m_caption")(cfg).build_datasets()["train"]
    assert [a["video"] for a in train.annotation] == ["000/1001.mp4", "000/1002.mp4"]
    batch = train.collater([train[0], train[1]])
    assert batch["text_input"] == ["aerial view of a forest"] and batch["n_skipped"] == 1


def test_missing_frame_count_or_an_image_processor_is_named(video_root):
    with pytest.raises(ValueError, match="n_frms"):
        cfg = msrvtt_config(video_root)
        del cfg.vis_processor.train.n_frms
        registry.get_builder_class("evlgen_msrvtt_caption")(cfg).build_datasets()
    with pytest.raises(ValueError, match="video processor"):
        cfg = msrvtt_config(video_root)
        cfg.vis_processor.train = {"name": "blip_image_eval", "image_size": SIZE}
        registry.get_builder_class("evlgen_msrvtt_caption")(cfg).build_datasets()
    with pytest.raises(ValueError, match="vis_processor.sampling"):
        cfg = msrvtt_config(video_root)
        cfg.vis_processor.train.sampling = "headtail"
        registry.get_builder_class("evlgen_msrvtt_caption")(cfg).build_datasets()


def test_plugin_builders_do_not_shadow_lavis_ones():
    from lavis.datasets.builders.caption_builder import MSRVTTCapBuilder

    assert registry.get_builder_class("msrvtt_caption") is MSRVTTCapBuilder


def test_lavis_training_processor_augments_the_sampled_clip(video_root):
    """alpro_video_train (random crop, flip, RandAugment) runs on the clip our loader samples."""
    cfg = msrvtt_config(video_root)
    cfg.vis_processor.train = {"name": "alpro_video_train", "image_size": SIZE, "n_frms": FRAMES}
    train = registry.get_builder_class("evlgen_msrvtt_caption")(cfg).build_datasets()["train"]
    torch.manual_seed(0)
    video = train[0]["video"]
    assert video.shape == (3, FRAMES, SIZE, SIZE) and video.dtype == torch.float32 and torch.isfinite(video).all()
