"""VQA datasets in LAVIS's format that skip unreadable images instead of crashing.

Annotation format: a JSON list of ``{"image", "question", "question_id", "image_id", "answer": [..]}``
(``answer`` holds every ground-truth answer, repeated as often as it was given).

* Training samples are ``{"image", "text_input", "answers", "weights"}`` (each distinct answer
  weighted by its share), batched like LAVIS's ``VQADataset`` into ``answer``, ``weight`` and
  ``n_answers``.
* Evaluation samples are ``{"image", "text_input", "question_id", "instance_id", "answer"}``
  (the most common answer). The builder attaches ``coco_fmt_qust_file`` / ``coco_fmt_anno_file``
  (VQAv2 questions / annotations) and ``answer_list``, which LAVIS's ``VQATask`` picks up.

Unreadable images give ``None``; batches count them under ``n_skipped`` (see ``caption.py``).
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any, Optional

from lavis.datasets.datasets.vqa_datasets import VQADataset, VQAEvalDataset

from lavis_evlgen.datasets.datasets.caption import SkippingDataset, collate_skipping


def answer_weights(answers: list[str]) -> tuple[list[str], list[float]]:
    """Distinct answers in first-seen order and the fraction of annotators who gave each."""
    counts = Counter(answers)
    return list(counts), [n / len(answers) for n in counts.values()]


class SafeVQADataset(SkippingDataset, VQADataset):
    """Training split: one sample per question, all ground-truth answers with weights."""

    def sample_fields(self, ann: dict[str, Any]) -> dict[str, Any]:
        answers, weights = answer_weights(ann["answer"])
        return {"text_input": self.text_processor(ann["question"]), "answers": answers, "weights": weights}

    def collater(self, samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        """LAVIS's VQA batching (answers, weights, n_answers) of the readable samples, plus the skip count."""
        return collate_skipping(samples, partial(VQADataset.collater, self))


class SafeVQAEvalDataset(SkippingDataset, VQAEvalDataset):
    """Evaluation split: one sample per question; the VQAv2 files are attached by the builder."""

    coco_fmt_qust_file: Optional[str] = None
    coco_fmt_anno_file: Optional[str] = None
    answer_list: Optional[list[str]] = None

    def sample_fields(self, ann: dict[str, Any]) -> dict[str, Any]:
        return {"text_input": self.text_processor(ann["question"]), "question_id": ann["question_id"],
                "instance_id": ann["instance_id"], "answer": Counter(ann["answer"]).most_common(1)[0][0]}
