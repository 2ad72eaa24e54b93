"""Readers for the public caption files, giving LAVIS entries and COCO-format ground truth.

Formats (``build_info.annotations.<split>.format``):

* ``karpathy``: Karpathy's split files (``dataset_coco.json``, ``dataset_flickr30k.json``):
  ``{"images": [{"filepath"?, "filename", "split", "sentences": [{"raw"}], "cocoid"?, "imgid"}]}``.
  The training split is ``train`` + ``restval``, as in BLIP and LAVIS.
* ``coco``: COCO-format captions (COCO's ``captions_val2014.json``, NoCaps'
  ``nocaps_val_4500_captions.json``): ``{"images": [{"id", "file_name", "domain"?}],
  "annotations": [{"image_id", "caption", "id"}]}``. The file is its own ground truth.
* ``lavis``: LAVIS's lists (``coco_karpathy_train.json``: one ``{"image", "caption", "image_id"}`` per
  caption; ``coco_karpathy_test.json``, ``flickr30k/test.json``: one ``{"image", "caption": [...]}``
  per image, the id read from the file name as LAVIS does).

Training entries are ``{"image", "caption", "image_id"}``; evaluation entries ``{"image", "image_id"}``
with the captions in a COCO-format ground truth (``{"images", "annotations"}``) for pycocoevalcap.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

FORMATS = ("karpathy", "coco", "lavis")
KARPATHY_TRAIN = ("train", "restval")


@dataclass
class EvalCaptions:
    """One evaluation split: image entries, COCO-format ground truth, and NoCaps domains if given."""

    entries: list[dict[str, Any]]
    gt: dict[str, list[dict[str, Any]]]
    domains: dict[int, str] = field(default_factory=dict)


def image_id_from_name(path: str) -> int:
    """The number ending a file name, as LAVIS reads COCO and Flickr ids (``COCO_val2014_000000391895.jpg``)."""
    match = re.search(r"(\d+)$", PurePosixPath(path).stem)
    if match is None:
        raise ValueError(f"cannot read an image id from the file name '{path}': give 'image_id' in the annotation")
    return int(match.group(1))


def _load(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def _gt(captions: dict[int, list[str]]) -> dict[str, list[dict[str, Any]]]:
    annotations = [{"image_id": image_id, "caption": caption, "id": n}
                   for n, (image_id, caption) in enumerate((i, c) for i, cs in captions.items() for c in cs)]
    return {"images": [{"id": image_id} for image_id in captions], "annotations": annotations}


def _karpathy_images(path: str, splits: tuple[str, ...]) -> list[tuple[str, int, list[str]]]:
    data = _load(path)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{path}: not a Karpathy split file (expected an object with 'images')")
    images = []
    for img in data["images"]:
        if img["split"] not in splits:
            continue
        rel = str(PurePosixPath(img.get("filepath", "")) / img["filename"])
        if "cocoid" in img:
            image_id = int(img["cocoid"])
        elif re.fullmatch(r"\d+", PurePosixPath(img["filename"]).stem):
            image_id = int(PurePosixPath(img["filename"]).stem)
        else:
            image_id = int(img["imgid"])
        images.append((rel, image_id, [s["raw"].strip() for s in img["sentences"]]))
    if not images:
        raise ValueError(f"{path}: no image in split(s) {list(splits)}")
    return images


def _coco(path: str) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    data = _load(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: not a COCO-format caption file (expected 'images' and 'annotations')")
    return data, {img["id"]: img for img in data["images"]}


def read_train(fmt: str, path: str) -> list[dict[str, Any]]:
    """Training entries, one per caption, from a file in format ``fmt``."""
    if fmt == "karpathy":
        return [{"image": rel, "caption": c, "image_id": i}
                for rel, i, captions in _karpathy_images(path, KARPATHY_TRAIN) for c in captions]
    if fmt == "coco":
        data, images = _coco(path)
        return [{"image": images[a["image_id"]]["file_name"], "caption": a["caption"], "image_id": a["image_id"]}
                for a in data["annotations"]]
    if fmt == "lavis":
        entries = _load(path)
        if not isinstance(entries, list) or (entries and not {"image", "caption", "image_id"} <= set(entries[0])):
            raise ValueError(f"{path}: not a LAVIS caption list (entries need 'image', 'caption', 'image_id')")
        return entries
    raise ValueError(f"unknown caption format '{fmt}'; expected one of {list(FORMATS)}")


def read_eval(fmt: str, path: str, split: str) -> EvalCaptions:
    """Evaluation entries and ground truth; ``split`` selects the images of a Karpathy file."""
    if fmt == "karpathy":
        images = _karpathy_images(path, (split,))
        return EvalCaptions([{"image": rel, "image_id": i} for rel, i, _ in images],
                            _gt({i: captions for _, i, captions in images}))
    if fmt == "coco":
        data, images = _coco(path)
        entries = [{"image": img["file_name"], "image_id": img["id"]} for img in images.values()]
        domains = {img["id"]: img["domain"] for img in images.values() if "domain" in img}
        return EvalCaptions(entries, {"images": data["images"], "annotations": data["annotations"]}, domains)
    if fmt == "lavis":
        entries = _load(path)
        if not isinstance(entries, list) or (entries and "image" not in entries[0]):
            raise ValueError(f"{path}: not a LAVIS caption list (entries need 'image')")
        ids = [e.get("image_id", None) for e in entries]
        ids = [int(i) if i is not None else image_id_from_name(e["image"]) for i, e in zip(ids, entries)]
        captions = {i: ([e["caption"]] if isinstance(e.get("caption"), str) else list(e.get("caption", [])))
                    for i, e in zip(ids, entries)}
        return EvalCaptions([{"image": e["image"], "image_id": i} for i, e in zip(ids, entries)], _gt(captions))
    raise ValueError(f"unknown caption format '{fmt}'; expected one of {list(FORMATS)}")
