"""VQA metrics: the official VQA accuracy (LAVIS's copy of the VQA evaluation code) and GQA exact match.

* :func:`vqa_accuracy`: for each question, the prediction's accuracy is the mean over the ten
  leave-one-out subsets of nine human answers of ``min(1, matches / 3)``, after the official answer
  normalisation; reported in percent overall and per answer type.
* :func:`exact_match_accuracy`: the percentage of predictions equal to the answer after the same
  normalisation (punctuation, number words, articles, contractions), as LAVIS scores GQA.

Both score the questions that have a prediction; ``questions_unanswered`` counts the others
(questions whose image could not be read).
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Hashable, Mapping

from lavis.common.vqa_tools.vqa import VQA
from lavis.common.vqa_tools.vqa_eval import VQAEval

_NORMALISER = VQAEval()


def normalize_answer(answer: str) -> str:
    """The official VQA normalisation of a predicted answer."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _NORMALISER.processDigitArticle(_NORMALISER.processPunctuation(text))


def vqa_accuracy(annotation_file: str, question_file: str, predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """Official VQA accuracy of ``[{"question_id", "answer"}]`` against the VQAv2 / OK-VQA files."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = VQA(annotation_file, question_file)
    unknown = [p["question_id"] for p in predictions if p["question_id"] not in gt.qa]
    if unknown:
        raise ValueError(f"{len(unknown)} prediction(s) for questions not in {annotation_file}, e.g. {unknown[:3]}")
    if not predictions:
        raise ValueError("no predictions to score")
    result = VQA()
    result.dataset = {"annotations": [{"question_id": p["question_id"], "answer": p["answer"],
                                       "image_id": gt.qa[p["question_id"]]["image_id"]} for p in predictions]}
    result.questions = {"questions": []}
    with contextlib.redirect_stdout(io.StringIO()):
        result.createIndex()
        scorer = VQAEval(gt, result, n=2)
        scorer.evaluate([p["question_id"] for p in predictions])
    return {"overall": scorer.accuracy["overall"], "per_answer_type": dict(scorer.accuracy["perAnswerType"]),
            "questions_scored": len(predictions), "questions_unanswered": len(gt.qa) - len(predictions)}


def exact_match_accuracy(predictions: Mapping[Hashable, str], answers: Mapping[Hashable, str]) -> dict[str, Any]:
    """Percent of predicted questions whose normalised prediction equals the normalised answer."""
    unknown = [q for q in predictions if q not in answers]
    if unknown:
        raise ValueError(f"{len(unknown)} prediction(s) for unknown questions, e.g. {unknown[:3]}")
    if not predictions:
        raise ValueError("no predictions to score")
    correct = sum(normalize_answer(p) == normalize_answer(answers[q]) for q, p in predictions.items())
    return {"overall": 100.0 * correct / len(predictions), "questions_scored": len(predictions),
            "questions_unanswered": len(answers) - len(predictions)}
