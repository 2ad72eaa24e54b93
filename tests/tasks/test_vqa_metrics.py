"""VQA accuracy and GQA exact match on hand-computed cases."""
from __future__ import annotations

import pytest

from lavis_evlgen.tasks.vqa_metrics import exact_match_accuracy, normalize_answer, vqa_accuracy
from tests.datasets.benchmark_fixtures import write_vqa


@pytest.fixture(scope="module")
def vqa_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa")
    write_vqa(root)
    folder = root / "coco/annotations"
    return (str(folder / "v2_mscoco_val2014_annotations.json"),
            str(folder / "v2_OpenEnded_mscoco_val2014_questions.json"))


def accuracy(vqa_files, question_id: int, answer: str) -> float:
    return vqa_accuracy(*vqa_files, [{"question_id": question_id, "answer": answer}])["overall"]


def test_ten_answer_accuracy_by_hand(vqa_files):
    # answers: red x7, dark red x2, maroon x1. Leaving one of the ten out, min(1, matches / 3):
    assert accuracy(vqa_files, 1001, "red") == 100.0  # 6 or 7 matches in every subset
    assert accuracy(vqa_files, 1001, "dark red") == 60.0  # (2 * 1/3 + 8 * 2/3) / 10
    assert accuracy(vqa_files, 1001, "maroon") == 30.0  # (1 * 0 + 9 * 1/3) / 10
    assert accuracy(vqa_files, 1001, "blue") == 0.0


def test_prediction_normalisation(vqa_files):
    # answers: "2" x4, "two" x2, "3" x4; a predicted number word becomes a digit, the answers stay as given
    assert accuracy(vqa_files, 1003, "two") == 100.0
    assert accuracy(vqa_files, 1003, "five") == 0.0
    # answers: cat x2, kitten x8; case, the article and the final period go
    assert accuracy(vqa_files, 1005, "The Cat.") == pytest.approx(60.0)


def test_overall_per_answer_type_and_unanswered(vqa_files):
    predictions = [{"question_id": 1001, "answer": "red"}, {"question_id": 1002, "answer": "yes"},
                   {"question_id": 1003, "answer": "two"}, {"question_id": 1005, "answer": "a cat"}]
    scores = vqa_accuracy(*vqa_files, predictions)
    assert scores["overall"] == 65.0  # (100 + 0 + 100 + 60) / 4
    assert scores["per_answer_type"] == {"other": 80.0, "yes/no": 0.0, "number": 100.0}
    assert (scores["questions_scored"], scores["questions_unanswered"]) == (4, 1)
    with pytest.raises(ValueError, match="not in"):
        vqa_accuracy(*vqa_files, [{"question_id": 7, "answer": "x"}])


def test_exact_match_after_normalisation():
    answers = {"q1": "yes", "q2": "pipe", "q3": "left", "q4": "2", "q5": "blue"}
    predictions = {"q1": "Yes.", "q2": "the pipe", "q3": "right", "q4": "two"}
    scores = exact_match_accuracy(predictions, answers)
    assert scores["overall"] == 75.0 and (scores["questions_scored"], scores["questions_unanswered"]) == (4, 1)
    assert normalize_answer("An Apple, sliced!") == "apple sliced"
    with pytest.raises(ValueError, match="unknown questions"):
        exact_match_accuracy({"q9": "x"}, answers)
