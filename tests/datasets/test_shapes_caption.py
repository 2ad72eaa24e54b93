"""Generated shapes caption set: determinism, held-out pairs, grammar, rendering, idempotence."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lavis_evlgen.datasets.generate.shapes_caption import generate_shapes_caption, most_frequent_caption
from lavis_evlgen.datasets.generate.shapes_scene import COLORS, HELD_OUT_PAIRS, SHAPES

from .conftest import TINY_SHAPES


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pairs_in(caption: str) -> set[tuple[str, str]]:
    words = caption.replace(",", "").split()
    return {(a, b) for a, b in zip(words, words[1:]) if a in COLORS and b in SHAPES}


def test_same_seed_gives_identical_bytes(shapes_root, tmp_path):
    again = generate_shapes_caption(tmp_path / "again", **TINY_SHAPES)
    assert _files(again) == _files(shapes_root)


def test_other_seed_gives_other_captions(shapes_root, tmp_path):
    other = generate_shapes_caption(tmp_path / "other", **{**TINY_SHAPES, "seed": 1})
    captions = lambda root: [e["caption"] for e in json.loads((root / "train.json").read_text())]  # noqa: E731
    assert captions(other) != captions(shapes_root)


def test_held_out_pairs_absent_from_train_and_val_present_in_test(tmp_path):
    root = generate_shapes_caption(tmp_path, seed=3, n_train=400, n_val=40, n_test=40, image_size=64)
    train = {p for e in json.loads((root / "train.json").read_text()) for p in _pairs_in(e["caption"])}
    val_gt = json.loads((root / "val_gt.json").read_text())
    val = {p for a in val_gt["annotations"] for p in _pairs_in(a["caption"])}
    assert not (train | val) & HELD_OUT_PAIRS
    assert len(train) == 30 - len(HELD_OUT_PAIRS)  # every seen pair occurs in training
    test = json.loads((root / "test.json").read_text())
    test_gt = json.loads((root / "test_gt.json").read_text())
    for entry in test:
        caps = [a["caption"] for a in test_gt["annotations"] if a["image_id"] == entry["image_id"]]
        held = {p for c in caps for p in _pairs_in(c)} & HELD_OUT_PAIRS
        assert len(held) == (1 if entry["held_out"] else 0)
    assert sum(e["held_out"] for e in test) == 20


def test_captions_follow_the_geometry(shapes_root):
    scenes = json.loads((shapes_root / "scenes.json").read_text())
    for scene in scenes["train"] + scenes["val"] + scenes["test"]:
        shapes = scene["shapes"]
        xs, ys = [s["cx"] for s in shapes], [s["cy"] for s in shapes]
        if scene["layout"].endswith("row"):
            assert xs == sorted(xs) and max(ys) - min(ys) < min(np.diff(xs))
        elif scene["layout"].endswith("column"):
            assert ys == sorted(ys) and max(xs) - min(xs) < min(np.diff(ys))
        assert len({(s["color"], s["kind"]) for s in shapes}) == len(shapes)


def test_every_image_has_several_references_that_name_its_shapes(shapes_root):
    gt = json.loads((shapes_root / "test_gt.json").read_text())
    scenes = {s["image_id"]: s for s in json.loads((shapes_root / "scenes.json").read_text())["test"]}
    for image in gt["images"]:
        caps = [a["caption"] for a in gt["annotations"] if a["image_id"] == image["id"]]
        assert 3 <= len(caps) <= 4 and len(set(caps)) == len(caps)
        for shape in scenes[image["id"]]["shapes"]:
            phrase = f"a {shape['size']} {shape['color']} {shape['kind']}"
            assert all(phrase in c for c in caps)


def test_rendered_shapes_have_their_colour_at_their_centre(shapes_root):
    scenes = json.loads((shapes_root / "scenes.json").read_text())
    for split in ("train", "test"):
        for i, scene in enumerate(scenes[split][:20]):
            image = np.asarray(Image.open(shapes_root / "images" / split / f"{i:06d}.png"))
            assert image.shape == (96, 96, 3)
            for s in scene["shapes"]:
                pixel = image[int(s["cy"]), int(s["cx"])].astype(int)
                assert np.abs(pixel - COLORS[s["color"]]).max() <= 2, (split, i, s)


def test_rerun_is_a_no_op_and_new_arguments_regenerate(tmp_path):
    args = {**TINY_SHAPES, "n_train": 10}
    root = generate_shapes_caption(tmp_path, **args)
    stamp = (root / "train.json").stat().st_mtime_ns
    val_before = (root / "val_gt.json").read_bytes()
    generate_shapes_caption(tmp_path, **args)
    assert (root / "train.json").stat().st_mtime_ns == stamp
    generate_shapes_caption(tmp_path, **{**args, "n_train": 12})
    assert len({e["image_id"] for e in json.loads((root / "train.json").read_text())}) == 12
    assert len(list((root / "images" / "train").iterdir())) == 12
    assert (root / "val_gt.json").read_bytes() == val_before  # splits draw from independent streams


def test_most_frequent_caption(tmp_path, shapes_root):
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps([{"caption": c, "image": "x.png", "image_id": 0} for c in ["b", "a", "a", "b", "a"]]))
    assert most_frequent_caption(ann) == "a"
    captions = [e["caption"] for e in json.loads((shapes_root / "train.json").read_text())]
    best = most_frequent_caption(shapes_root / "train.json")
    assert captions.count(best) == max(captions.count(c) for c in set(captions))


@pytest.mark.parametrize("bad", [{"n_train": 0}, {"n_val": -1}, {"image_size": 16}, {"n_test": 2.5}])
def test_bad_arguments_name_the_argument(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        generate_shapes_caption(tmp_path, **{**TINY_SHAPES, **bad})
