"""``shapes_caption``: a procedurally generated caption set written in COCO caption format.

Layout of ``root`` after :func:`generate_shapes_caption`::

    images/{train,val,test}/NNNNNN.png   RGB PNGs
    train.json                           LAVIS: one entry per caption
    val.json, test.json                  LAVIS: one entry per image (test entries carry "held_out")
    val_gt.json, test_gt.json            COCO caption ground truth (pycocotools / pycocoevalcap)
    test_held_out{,_gt}.json             the test images with a held-out pair (LAVIS + COCO)
    test_seen{,_gt}.json                 the test images without one (LAVIS + COCO)
    scenes.json                          per split, each image's shapes (kind, colour, size, centre)
    manifest.json                        the generation arguments (written last)

Splits use independent random streams (seed, split), so changing ``n_train`` leaves val and test
unchanged. Train and val never contain a held-out colour-shape pair
(:data:`~lavis_evlgen.datasets.generate.shapes_scene.HELD_OUT_PAIRS`); every even-indexed test
image contains exactly one, the odd-indexed ones none.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np

from lavis_evlgen.datasets.generate.coco_format import CaptionedImage, train_entries, write_eval_split, write_json
from lavis_evlgen.datasets.generate.manifest import clear, is_current, write_manifest
from lavis_evlgen.datasets.generate.shapes_render import render
from lavis_evlgen.datasets.generate.shapes_scene import captions, sample_scene

SPLITS = ("train", "val", "test")
ID_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}
FORMAT_VERSION = 2
MIN_IMAGE_SIZE = 48
OUTPUTS = ["images", "train.json", "val.json", "val_gt.json", "test.json", "test_gt.json", "test_held_out.json",
           "test_held_out_gt.json", "test_seen.json", "test_seen_gt.json", "scenes.json"]


def _check(n_train: int, n_val: int, n_test: int, image_size: int) -> None:
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"shapes_caption: {name} must be a positive integer, got {value!r}")
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"shapes_caption: image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")


def _generate_split(root: Path, split: str, n: int, seed: int, image_size: int) -> tuple[list[CaptionedImage], list]:
    """Render ``n`` images of ``split``; returns their captions and scene descriptions."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    folder = root / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    items, scenes = [], []
    for i in range(n):
        held_out = split == "test" and i % 2 == 0
        scene = sample_scene(rng, image_size, with_held_out=held_out)
        render(scene, rng, image_size).save(folder / f"{i:06d}.png", format="PNG")
        image_id = ID_OFFSET[split] + i
        extra = {"held_out": held_out} if split == "test" else {}
        items.append(CaptionedImage(f"images/{split}/{i:06d}.png", image_id, captions(scene), extra))
        scenes.append({"image_id": image_id, **dataclasses.asdict(scene)})
    return items, scenes


def generate_shapes_caption(root: Path, seed: int = 0, n_train: int = 2000, n_val: int = 100,
                            n_test: int = 200, image_size: int = 224) -> Path:
    """Generate the set under ``root`` (idempotent: same arguments and a finished run -> no work)."""
    root = Path(root)
    _check(n_train, n_val, n_test, image_size)
    args = {"seed": seed, "n_train": n_train, "n_val": n_val, "n_test": n_test,
            "image_size": image_size, "version": FORMAT_VERSION}
    if is_current(root, args):
        return root
    root.mkdir(parents=True, exist_ok=True)
    clear(root, OUTPUTS)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    all_scenes = {}
    for split in SPLITS:
        items, all_scenes[split] = _generate_split(root, split, sizes[split], seed, image_size)
        if split == "train":
            write_json(root / "train.json", train_entries(items))
            continue
        write_eval_split(root, split, items)
        if split == "test":
            write_eval_split(root, "test_held_out", [it for it in items if it.extra["held_out"]])
            write_eval_split(root, "test_seen", [it for it in items if not it.extra["held_out"]])
    write_json(root / "scenes.json", all_scenes)
    write_manifest(root, args)
    return root


def most_frequent_caption(train_ann_path: Path) -> str:
    """The most frequent training caption (ties: first seen), the trivial constant-output baseline."""
    entries = json.loads(Path(train_ann_path).read_text())
    if not entries:
        raise ValueError(f"no captions in {train_ann_path}")
    return Counter(e["caption"] for e in entries).most_common(1)[0][0]
