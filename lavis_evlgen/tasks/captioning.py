"""``evlgen_captioning``: LAVIS's CaptionTask scored against the evaluated dataset's own ground truth.

LAVIS's CaptionTask downloads the COCO Karpathy ground truth for the split names "val" and "test".
This task takes the COCO-format file from the dataset instead (``dataset.gt_file``, set by the
``caption_folder`` builder from ``build_info.annotations.<split>.gt``), scores BLEU, METEOR, ROUGE-L and
CIDEr (no SPICE, see ``caption_metrics``), and counts images that could not be read.

Run keys, read by :meth:`EvlgenCaptionTask.caption_settings` for this task and every subclass (benchmarks,
SCST): ``num_beams`` (5), ``max_len`` (30), ``min_len`` (8), ``repetition_penalty`` (unset: the model's own,
``model.repetition_penalty``, else none; above 1 discourages the loops a small LLM falls into with greedy
decoding), ``report_metric`` (True). Results are
written the LAVIS way: one ``<split>_<epoch>_rank<r>.json`` per rank, merged by rank 0 into
``<split>_<epoch>.json`` with one caption per ``image_id`` (the distributed sampler's padding repeats
images). ``agg_metrics`` is CIDEr + BLEU-4, as in LAVIS.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import torch
from lavis.common.dist_utils import main_process
from lavis.common.registry import registry
from lavis.tasks.captioning import CaptionTask

from lavis_evlgen.common.config_check import optional_number
from lavis_evlgen.common.distributed import all_reduce_sum
from lavis_evlgen.datasets.datasets.caption import SKIPPED_KEY
from lavis_evlgen.tasks.caption_metrics import coco_caption_scores

logger = logging.getLogger(__name__)


@registry.register_task("evlgen_captioning")
class EvlgenCaptionTask(CaptionTask):
    """Caption generation + COCO metrics with local ground truth."""

    READS_REPETITION_PENALTY = True  # config_check refuses run.repetition_penalty for tasks without it

    def __init__(self, num_beams: int, max_len: int, min_len: int, evaluate: bool, report_metric: bool = True,
                 repetition_penalty: Optional[float] = None):
        super().__init__(num_beams=num_beams, max_len=max_len, min_len=min_len, evaluate=evaluate,
                         report_metric=report_metric)
        self.repetition_penalty = repetition_penalty
        self.gt_file: Optional[str] = None
        self.eval_skipped = 0

    @staticmethod
    def caption_settings(run) -> dict[str, Any]:
        """The caption-generation and reporting keys of ``run``, with their defaults (the one place they are read)."""
        penalty = optional_number(run, "repetition_penalty", "run", lambda v: v > 0, "must be a positive number")
        return {"num_beams": int(run.get("num_beams", 5)), "max_len": int(run.get("max_len", 30)),
                "min_len": int(run.get("min_len", 8)), "evaluate": bool(run.get("evaluate", False)),
                "report_metric": bool(run.get("report_metric", True)),
                "repetition_penalty": penalty}

    @classmethod
    def setup_task(cls, cfg) -> "EvlgenCaptionTask":
        return cls(**cls.caption_settings(cfg.run_cfg))

    def before_evaluation(self, model, dataset, **kwargs) -> None:
        """Remember the dataset's ground-truth file; reset the unreadable-image count."""
        super().before_evaluation(model=model, dataset=dataset, **kwargs)
        self.gt_file = getattr(dataset, "gt_file", None)
        self.eval_skipped = 0

    def valid_step(self, model, samples: dict[str, Any]) -> list[dict[str, Any]]:
        self.eval_skipped += int(samples.pop(SKIPPED_KEY, 0))
        if "image_id" not in samples:
            return []
        captions = model.generate(samples, use_nucleus_sampling=False, num_beams=self.num_beams,
                                  max_length=self.max_len, min_length=self.min_len,
                                  repetition_penalty=self.repetition_penalty)
        return [{"caption": caption, "image_id": int(i)} for caption, i in zip(captions, samples["image_id"])]

    def after_evaluation(self, val_result: list[dict], split_name: str, epoch: Any, **kwargs) -> Optional[dict]:
        """Merge the ranks' captions, score them on rank 0; returns the metrics there, None elsewhere."""
        skipped = int(all_reduce_sum(torch.tensor(self.eval_skipped)).item())
        if skipped:
            logger.warning("%s: %d image(s) could not be read and have no caption", split_name, skipped)
        result_file = self.save_result(result=val_result, result_dir=registry.get_path("result_dir"),
                                       filename=f"{split_name}_{epoch}", remove_duplicate="image_id")
        if not self.report_metric:
            return {"agg_metrics": 0.0, "skipped_samples": skipped}
        if self.gt_file is None:
            raise ValueError(f"split '{split_name}' has no ground truth: set build_info.annotations."
                             f"{split_name}.gt in the dataset config, or run.report_metric: False")
        return self._report_metrics(eval_result_file=result_file, split_name=split_name, skipped=skipped)

    @main_process
    def _report_metrics(self, eval_result_file: str, split_name: str, skipped: int = 0) -> dict[str, float]:
        scores = coco_caption_scores(self.gt_file, eval_result_file)
        with open(os.path.join(registry.get_path("output_dir"), "evaluate.txt"), "a") as f:
            f.write(json.dumps({split_name: scores}) + "\n")
        return {**scores, "agg_metrics": scores["CIDEr"] + scores["Bleu_4"], "skipped_samples": skipped}
