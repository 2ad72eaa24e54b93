"""COCO caption metrics for groups of images (overall, NoCaps domains), each group its own corpus.

BLEU-1..4, METEOR, ROUGE-L and CIDEr through pycocoevalcap's scorers, plus SPICE when its
resources are on disk (:mod:`lavis_evlgen.tasks.spice`; otherwise ``spice_note`` says why not). Every
group is scored as pycocoevalcap would score it alone (CIDEr's document frequencies come from the
group's references, as in NoCaps' per-domain evaluation); the captions are PTB-tokenised once and one
METEOR process serves every group. Images with no prediction (unreadable files) are left out and
counted per group under ``images_unscored``.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Collection, Mapping

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from lavis_evlgen.tasks.spice import missing_spice_files, spice_note, spice_score

logger = logging.getLogger(__name__)

BLEU = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")


def _captions_by_image(annotations: list[dict[str, Any]]) -> dict[Any, list[dict[str, str]]]:
    by_image: dict[Any, list[dict[str, str]]] = {}
    for ann in annotations:
        by_image.setdefault(ann["image_id"], []).append({"caption": ann["caption"]})
    return by_image


def grouped_caption_scores(gt_file: str, results_file: str, groups: Mapping[str, Collection[Any]],
                           work_dir: str) -> dict[str, dict[str, Any]]:
    """Scores of ``results_file`` (``[{"image_id", "caption"}]``) against a COCO-format ``gt_file`` per group.

    ``groups`` maps a name to the image ids it holds; every predicted image must be in ``gt_file``.
    """
    with open(gt_file) as f:
        gt = json.load(f)
    with open(results_file) as f:
        predictions = json.load(f)
    refs_raw = _captions_by_image(gt["annotations"])
    hyps_raw = {p["image_id"]: [{"caption": p["caption"]}] for p in predictions}
    unknown = sorted(set(hyps_raw) - set(refs_raw))
    if unknown:
        raise ValueError(f"{len(unknown)} predicted image(s) have no caption in {gt_file}, e.g. {unknown[:3]}")
    tokenizer = PTBTokenizer()
    refs, hyps = tokenizer.tokenize(refs_raw), tokenizer.tokenize(hyps_raw)
    missing_spice = missing_spice_files()
    if missing_spice:
        logger.warning(spice_note(missing_spice))
    meteor = Meteor()
    scores = {}
    for name, ids in groups.items():
        scored = [i for i in ids if i in hyps]
        if not scored:
            raise ValueError(f"no prediction for any image of group '{name}'")
        group_refs, group_hyps = {i: refs[i] for i in scored}, {i: hyps[i] for i in scored}
        group: dict[str, Any] = {}
        for scorer, names in ((Bleu(4), BLEU), (meteor, ("METEOR",)), (Rouge(), ("ROUGE_L",)), (Cider(), ("CIDEr",))):
            value, _ = scorer.compute_score(group_refs, group_hyps)
            values = value if isinstance(value, list) else [value]
            group.update({key: float(v) for key, v in zip(names, values)})
        if missing_spice:
            group["spice_note"] = spice_note(missing_spice)
        else:
            group["SPICE"] = spice_score(group_refs, group_hyps, work_dir)
        group["images_scored"] = len(scored)
        group["images_unscored"] = len(ids) - len(scored)
        scores[name] = group
    return scores
