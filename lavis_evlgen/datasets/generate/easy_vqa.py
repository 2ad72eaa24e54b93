"""``easy_vqa``: the easy-VQA package's questions (MIT) as LAVIS VQA annotations + VQAv2 eval files.

easy-VQA ships 4000 train and 1000 test images (64x64 shapes) with about 38.6k / 9.7k questions and
13 possible answers. Splits written here:

* val: questions about ``val_images`` train images drawn at random (those images leave train);
* train: the questions about the remaining train images;
* test: questions from the package's test set.

``n_train`` / ``n_val`` / ``n_test`` keep a random subset of that many questions (None: all), since
evaluating thousands of questions on a CPU is slow. Layout of ``root``::

    images/{train,test}/N.png           the images the chosen questions refer to (copied)
    train.json, val.json, test.json     LAVIS: {"image", "question", "question_id", "image_id", "answer": [..]}
    {val,test}_questions.json           VQAv2 questions
    {val,test}_annotations.json         VQAv2 annotations
    answer_list.json                    the 13 answers (for rank-based answer prediction)
    manifest.json                       the arguments (written last)
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import easy_vqa
import numpy as np

from lavis_evlgen.datasets.generate.coco_format import write_json
from lavis_evlgen.datasets.generate.manifest import clear, is_current, write_manifest
from lavis_evlgen.datasets.generate.vqa_format import vqa_v2_files

TEST_OFFSET = 100_000  # added to test question and image ids, which restart at 0 in the package
SHAPE_ANSWERS = frozenset({"circle", "rectangle", "triangle"})
YES_NO = frozenset({"yes", "no"})
OUTPUTS = ["images", "train.json", "val.json", "test.json", "val_questions.json", "val_annotations.json",
           "test_questions.json", "test_annotations.json", "answer_list.json"]
FORMAT_VERSION = 1


def answer_type(answer: str) -> str:
    """``yes/no``, ``shape`` or ``color``: the per-type accuracies VQAEval reports."""
    if answer in YES_NO:
        return "yes/no"
    return "shape" if answer in SHAPE_ANSWERS else "color"


def _subset(pool: list[int], n: Optional[int], rng: np.random.Generator) -> list[int]:
    if n is None or n >= len(pool):
        return pool
    return sorted(rng.choice(pool, size=n, replace=False).tolist())


def _entries(source: str, picked: list[int], questions: tuple[list, list, list]) -> list[dict[str, Any]]:
    texts, answers, image_ids = questions
    offset = TEST_OFFSET if source == "test" else 0
    return [{"image": f"images/{source}/{image_ids[i]}.png", "question": texts[i], "question_id": offset + i,
             "image_id": offset + image_ids[i], "answer": [answers[i]]} for i in picked]


def _check(n_train: Optional[int], n_val: Optional[int], n_test: Optional[int], val_images: int) -> None:
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"easy_vqa: {name} must be a positive integer or null, got {value!r}")
    if not isinstance(val_images, int) or not 1 <= val_images < 4000:
        raise ValueError(f"easy_vqa: val_images must be an integer in [1, 3999], got {val_images!r}")


def prepare_easy_vqa(root: Path, seed: int = 0, n_train: Optional[int] = None, n_val: Optional[int] = 500,
                     n_test: Optional[int] = 500, val_images: int = 400) -> Path:
    """Write the splits under ``root`` (idempotent: same arguments and a finished run -> no work)."""
    root = Path(root)
    _check(n_train, n_val, n_test, val_images)
    args = {"seed": seed, "n_train": n_train, "n_val": n_val, "n_test": n_test, "val_images": val_images,
            "version": FORMAT_VERSION}
    if is_current(root, args):
        return root
    root.mkdir(parents=True, exist_ok=True)
    clear(root, OUTPUTS)
    rng = np.random.default_rng(seed)
    train_q, test_q = easy_vqa.get_train_questions(), easy_vqa.get_test_questions()
    val_set = set(rng.choice(sorted(set(train_q[2])), size=val_images, replace=False).tolist())
    train_pool = [i for i, img in enumerate(train_q[2]) if img not in val_set]
    val_pool = [i for i, img in enumerate(train_q[2]) if img in val_set]
    splits = {
        "train": _entries("train", _subset(train_pool, n_train, rng), train_q),
        "val": _entries("train", _subset(val_pool, n_val, rng), train_q),
        "test": _entries("test", _subset(list(range(len(test_q[0]))), n_test, rng), test_q),
    }
    sources = {"train": easy_vqa.get_train_image_paths(), "test": easy_vqa.get_test_image_paths()}
    for split, entries in splits.items():
        for e in entries:
            dst = root / e["image"]
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sources[dst.parent.name][int(dst.stem)], dst)
        write_json(root / f"{split}.json", entries)
        if split != "train":
            questions, annotations = vqa_v2_files(entries, split, "easy_vqa", answer_type)
            write_json(root / f"{split}_questions.json", questions)
            write_json(root / f"{split}_annotations.json", annotations)
    write_json(root / "answer_list.json", easy_vqa.get_answers())
    write_manifest(root, args)
    return root
