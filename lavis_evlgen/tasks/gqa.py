"""``evlgen_gqa``: zero-shot GQA (test-dev balanced) scored by exact match after normalisation.

Everything but the score is ``evlgen_vqa`` (BLIP-2's prompt and beam settings, merged ranks, one
answer per question, ``<split>_<epoch>_vqa_result.json``). The answers come from the evaluated
dataset's ``gt_answers`` (set by the ``evlgen_gqa`` builder from the official questions file);
prediction and answer are both normalised the official VQA way before comparing.
"""
from __future__ import annotations

from typing import Any

from lavis.common.registry import registry

from lavis_evlgen.tasks.vqa import EvlgenVQATask
from lavis_evlgen.tasks.vqa_metrics import exact_match_accuracy


@registry.register_task("evlgen_gqa")
class EvlgenGQATask(EvlgenVQATask):
    """Zero-shot GQA: exact-match accuracy over the questions answered."""

    def score(self, predictions: list[dict[str, Any]], split_name: str) -> dict[str, Any]:
        answers = getattr(self.dataset, "gt_answers", None)
        if answers is None:
            raise ValueError(f"split '{split_name}' has no GQA answers: build it with the evlgen_gqa builder "
                             f"(build_info.annotations.{split_name}.storage)")
        return exact_match_accuracy({p["question_id"]: p["answer"] for p in predictions}, answers)
