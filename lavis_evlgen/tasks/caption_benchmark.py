"""``evlgen_caption_benchmark`` (COCO Karpathy test, Flickr30K test) and ``evlgen_nocaps`` (NoCaps val).

Both are ``evlgen_captioning`` (generation, ground truth from the dataset's ``gt_file``, ranks merged
into ``<result_dir>/<split>_<epoch>.json`` with one caption per image, unreadable images counted)
with a different scoring step (:func:`grouped_caption_scores`): BLEU-1..4, METEOR, ROUGE-L, CIDEr,
and SPICE when its resources are on disk (else a ``spice_note``).

* ``evlgen_caption_benchmark`` scores one group, ``overall``.
* ``evlgen_nocaps`` also scores each domain of the dataset's ``domains`` (in-domain, near-domain,
  out-domain), each as its own corpus, as NoCaps' evaluation does; the metrics carry them as
  ``<domain>/<metric>``.

The scores are appended to ``<output_dir>/evaluate.txt`` as ``{split: {group: scores}}``; the returned
metrics hold the overall scores at top level and ``agg_metrics`` = CIDEr + BLEU-4, as LAVIS does.
"""
from __future__ import annotations

import json
import os
from typing import Any, Collection

from lavis.common.dist_utils import main_process
from lavis.common.registry import registry

from lavis_evlgen.tasks.caption_groups import grouped_caption_scores
from lavis_evlgen.tasks.captioning import EvlgenCaptionTask

OVERALL = "overall"


@registry.register_task("evlgen_caption_benchmark")
class CaptionBenchmarkTask(EvlgenCaptionTask):
    """Caption generation scored overall with SPICE when available (see module doc)."""

    def groups(self, image_ids: Collection[Any]) -> dict[str, Collection[Any]]:
        """The image groups to score: here every ground-truth image."""
        return {OVERALL: image_ids}

    @main_process
    def _report_metrics(self, eval_result_file: str, split_name: str, skipped: int = 0) -> dict[str, Any]:
        with open(self.gt_file) as f:
            image_ids = [img["id"] for img in json.load(f)["images"]]
        scores = grouped_caption_scores(self.gt_file, eval_result_file, self.groups(image_ids),
                                        work_dir=registry.get_path("result_dir"))
        with open(os.path.join(registry.get_path("output_dir"), "evaluate.txt"), "a") as f:
            f.write(json.dumps({split_name: scores}) + "\n")
        overall = scores[OVERALL]
        metrics = dict(overall)
        for group, values in scores.items():
            if group != OVERALL:
                metrics.update({f"{group}/{key}": value for key, value in values.items() if key != "spice_note"})
        return {**metrics, "agg_metrics": overall["CIDEr"] + overall["Bleu_4"], "skipped_samples": skipped}


@registry.register_task("evlgen_nocaps")
class NoCapsTask(CaptionBenchmarkTask):
    """NoCaps: overall and per-domain scores."""

    def before_evaluation(self, model, dataset, **kwargs) -> None:
        super().before_evaluation(model=model, dataset=dataset, **kwargs)
        self.domains = getattr(dataset, "domains", None) or {}

    def groups(self, image_ids: Collection[Any]) -> dict[str, Collection[Any]]:
        if not self.domains:
            raise ValueError("the NoCaps split has no image domains: build it with the evlgen_nocaps builder "
                             "from the official file (format: coco, images with 'domain')")
        groups: dict[str, Collection[Any]] = {OVERALL: image_ids}
        for domain in sorted(set(self.domains.values())):
            groups[domain] = [i for i in image_ids if self.domains.get(i) == domain]
        return groups
