"""Readers for the official VQA benchmark files, giving LAVIS VQA entries.

* VQAv2 and OK-VQA: a questions file ``{"questions": [{"question_id", "image_id", "question"}], ...}``
  and an annotations file ``{"annotations": [{"question_id", "image_id", "answers": [{"answer"}, ...],
  "question_type", "answer_type"}]}`` (ten answers per question; OK-VQA's five are each listed twice).
* GQA: ``{"<question id>": {"imageId", "question", "answer", ...}}`` (``testdev_balanced_questions.json``).
  Question ids stay strings, as in the file.

Entries are ``{"image", "question", "question_id", "image_id", "answer": [...]}`` with the image path
from ``image_pattern`` (a ``str.format`` pattern given ``image_id``, e.g.
``val2014/COCO_val2014_{image_id:012d}.jpg``).
"""
from __future__ import annotations

import json
from typing import Any


def _load(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def read_vqa(questions_file: str, annotations_file: str, image_pattern: str) -> list[dict[str, Any]]:
    """One entry per question of a VQAv2 / OK-VQA questions file, with its annotated answers."""
    questions = _load(questions_file)
    annotations = _load(annotations_file)
    if not isinstance(questions, dict) or "questions" not in questions:
        raise ValueError(f"{questions_file}: not a VQA questions file (expected an object with 'questions')")
    if not isinstance(annotations, dict) or "annotations" not in annotations:
        raise ValueError(f"{annotations_file}: not a VQA annotations file (expected an object with 'annotations')")
    answers = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in annotations["annotations"]}
    missing = [q["question_id"] for q in questions["questions"] if q["question_id"] not in answers]
    if missing:
        raise ValueError(f"{annotations_file}: no answers for {len(missing)} question(s) of {questions_file}, "
                         f"e.g. {missing[:3]}")
    return [{"image": image_pattern.format(image_id=q["image_id"]), "question": q["question"],
             "question_id": q["question_id"], "image_id": q["image_id"], "answer": answers[q["question_id"]]}
            for q in questions["questions"]]


def read_gqa(path: str, image_pattern: str) -> list[dict[str, Any]]:
    """One entry per question of an official GQA questions file (one answer each)."""
    data = _load(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "imageId" in v for v in data.values()):
        raise ValueError(f"{path}: not a GQA questions file (expected {{question_id: {{'imageId', 'question', "
                         f"'answer'}}}})")
    return [{"image": image_pattern.format(image_id=q["imageId"]), "question": q["question"],
             "question_id": str(qid), "image_id": q["imageId"], "answer": [q["answer"]]}
            for qid, q in data.items()]
