"""The generated ground truth loads in pycocotools and scores with pycocoevalcap's CIDEr."""
from __future__ import annotations

import json
from pathlib import Path

from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools.coco import COCO

from lavis_evlgen.datasets.generate.shapes_caption import most_frequent_caption


def _cider(gt_file: Path, results: list[dict]) -> float:
    """CIDEr the way LAVIS's caption evaluation computes it: COCO + loadRes, PTB tokens, Cider."""
    coco = COCO(str(gt_file))
    res = coco.loadRes(results)
    ids = res.getImgIds()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: coco.imgToAnns[i] for i in ids})
    preds = tokenizer.tokenize({i: res.imgToAnns[i] for i in ids})
    return Cider().compute_score(gts, preds)[0]


def _references(gt_file: Path) -> dict[int, list[str]]:
    gt = json.loads(gt_file.read_text())
    refs: dict[int, list[str]] = {img["id"]: [] for img in gt["images"]}
    for ann in gt["annotations"]:
        refs[ann["image_id"]].append(ann["caption"])
    return refs


def test_ground_truth_matches_the_eval_annotation(shapes_root):
    for split in ("val", "test"):
        entries = json.loads((shapes_root / f"{split}.json").read_text())
        coco = COCO(str(shapes_root / f"{split}_gt.json"))
        assert sorted(coco.getImgIds()) == sorted(e["image_id"] for e in entries)
        assert all(isinstance(e["image_id"], int) for e in entries)
        assert all(len(coco.getAnnIds(imgIds=[e["image_id"]])) >= 3 for e in entries)
    held = COCO(str(shapes_root / "test_held_out_gt.json")).getImgIds()
    seen = COCO(str(shapes_root / "test_seen_gt.json")).getImgIds()
    assert len(held) == len(seen) == 6 and not set(held) & set(seen)
    for subset, ids in (("held_out", held), ("seen", seen)):
        entries = json.loads((shapes_root / f"test_{subset}.json").read_text())
        assert sorted(e["image_id"] for e in entries) == sorted(ids)
        assert all(e["held_out"] == (subset == "held_out") for e in entries)


def test_cider_separates_right_from_wrong_captions(shapes_root):
    gt_file = shapes_root / "test_gt.json"
    refs = _references(gt_file)
    ids = sorted(refs)
    right = [{"image_id": i, "caption": refs[i][0]} for i in ids]
    shifted = [{"image_id": i, "caption": refs[ids[(k + 1) % len(ids)]][0]} for k, i in enumerate(ids)]
    constant = most_frequent_caption(shapes_root / "train.json")
    baseline = [{"image_id": i, "caption": constant} for i in ids]
    scores = {name: _cider(gt_file, res) for name, res in
              (("right", right), ("shifted", shifted), ("baseline", baseline))}
    assert scores["right"] > 3.0, scores
    assert scores["shifted"] < 0.2 * scores["right"], scores
    assert scores["baseline"] < 0.2 * scores["right"], scores
