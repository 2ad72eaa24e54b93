"""COCO caption metrics from local files: BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap).

SPICE is left out: pycocoevalcap's SPICE downloads Stanford CoreNLP at its first use, which fails
offline. Scores are computed over the images that have a prediction (an image whose file could not
be read has none); the count of ground-truth images left out is returned under ``images_unscored``.
"""
from __future__ import annotations

import json
import logging

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools.coco import COCO

logger = logging.getLogger(__name__)

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SPICE_NOTE = "SPICE is skipped: pycocoevalcap's SPICE downloads Stanford CoreNLP at run time"


def coco_caption_scores(gt_file: str, results_file: str) -> dict[str, float]:
    """Scores of ``results_file`` (``[{"image_id", "caption"}]``) against a COCO-format ``gt_file``."""
    with open(results_file) as f:
        if not json.load(f):
            raise ValueError(f"no predictions to score in {results_file}")
    coco = COCO(gt_file)
    predictions = coco.loadRes(results_file)
    image_ids = sorted(predictions.getImgIds())
    unscored = len(set(coco.getImgIds()) - set(image_ids))
    if unscored:
        logger.warning("%d ground-truth image(s) in %s have no prediction; scoring %d", unscored, gt_file,
                       len(image_ids))
    tokenizer = PTBTokenizer()
    refs = tokenizer.tokenize({i: coco.imgToAnns[i] for i in image_ids})
    hyps = tokenizer.tokenize({i: predictions.imgToAnns[i] for i in image_ids})
    scores: dict[str, float] = {}
    for scorer, names in ((Bleu(4), METRICS[:4]), (Meteor(), ("METEOR",)), (Rouge(), ("ROUGE_L",)),
                          (Cider(), ("CIDEr",))):
        score, _ = scorer.compute_score(refs, hyps)
        values = score if isinstance(score, list) else [score]
        scores.update({name: float(value) for name, value in zip(names, values)})
    logger.info(SPICE_NOTE)
    scores["images_unscored"] = unscored
    return scores
