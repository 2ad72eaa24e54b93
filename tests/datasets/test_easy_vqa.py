"""easy-VQA splits: disjoint images, subsets, and VQAv2 files that LAVIS's VQA tools and task score."""
from __future__ import annotations

import json

import easy_vqa
import pytest
from lavis.common.vqa_tools.vqa import VQA
from lavis.common.vqa_tools.vqa_eval import VQAEval
from lavis.tasks.vqa import VQATask
from omegaconf import OmegaConf

from lavis_evlgen.datasets.generate.easy_vqa import TEST_OFFSET, prepare_easy_vqa


@pytest.fixture(scope="module")
def vqa_root(tmp_path_factory):
    return prepare_easy_vqa(tmp_path_factory.mktemp("easy_vqa"), seed=0, n_train=200, n_val=40, n_test=30,
                            val_images=50)


def _load(root, name):
    return json.loads((root / name).read_text())


def test_splits_have_the_requested_sizes_and_disjoint_images(vqa_root):
    train, val, test = (_load(vqa_root, f"{s}.json") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (200, 40, 30)
    assert not {e["image_id"] for e in train} & {e["image_id"] for e in val}
    assert all(e["image_id"] >= TEST_OFFSET and e["question_id"] >= TEST_OFFSET for e in test)
    assert len({e["question_id"] for e in train + val + test}) == 270
    assert all((vqa_root / e["image"]).is_file() for e in train + val + test)


def test_entries_copy_the_package_questions(vqa_root):
    texts, answers, image_ids = easy_vqa.get_test_questions()
    for e in _load(vqa_root, "test.json"):
        i = e["question_id"] - TEST_OFFSET
        assert (e["question"], e["answer"], e["image_id"] - TEST_OFFSET) == (texts[i], [answers[i]], image_ids[i])


def test_all_questions_when_no_subset(tmp_path):
    root = prepare_easy_vqa(tmp_path, n_train=5, n_val=None, n_test=5, val_images=3)
    _, _, image_ids = easy_vqa.get_train_questions()
    val = _load(root, "val.json")
    assert len({e["image_id"] for e in val}) == 3
    assert len(val) == sum(img in {e["image_id"] for e in val} for img in image_ids)


def _scores(root, split, answer_of):
    """Overall and per-answer-type accuracy exactly as VQATask._report_metrics computes them."""
    ques, anno = str(root / f"{split}_questions.json"), str(root / f"{split}_annotations.json")
    results = [{"question_id": e["question_id"], "answer": answer_of(e)} for e in _load(root, f"{split}.json")]
    result_file = root / f"{split}_result.json"
    result_file.write_text(json.dumps(results))
    vqa = VQA(anno, ques)
    scorer = VQAEval(vqa, vqa.loadRes(resFile=str(result_file), quesFile=ques), n=2)
    scorer.evaluate()
    return scorer.accuracy


@pytest.mark.parametrize("split", ["val", "test"])
def test_vqa_eval_scores_right_and_wrong_answers(vqa_root, split):
    right = _scores(vqa_root, split, lambda e: e["answer"][0])
    wrong = _scores(vqa_root, split, lambda e: "no" if e["answer"][0] == "yes" else "yes")
    assert right["overall"] == 100.0 and wrong["overall"] == 0.0
    assert set(right["perAnswerType"]) <= {"yes/no", "color", "shape"} and "yes/no" in right["perAnswerType"]


def test_vqa_files_follow_vqa_v2(vqa_root):
    questions, annotations = _load(vqa_root, "val_questions.json"), _load(vqa_root, "val_annotations.json")
    assert questions["task_type"] == "Open-Ended"
    assert {"image_id", "question", "question_id"} == set(questions["questions"][0])
    ann = annotations["annotations"][0]
    assert {"image_id", "question_id", "answers", "question_type", "answer_type", "multiple_choice_answer"} <= set(ann)
    assert len(ann["answers"]) == 10 and {a["answer"] for a in ann["answers"]} == {ann["multiple_choice_answer"]}


def test_lavis_vqa_task_picks_up_the_eval_files(tmp_path, dataset_config):
    cfg = dataset_config("easy_vqa", tmp_path, n_train=3, n_val=3, n_test=3, val_images=5)
    task = VQATask(num_beams=1, max_len=5, min_len=1, evaluate=True, num_ans_candidates=13)
    task.build_datasets(OmegaConf.create({"datasets_cfg": {"easy_vqa": cfg}}))
    root = tmp_path / "data" / "easy_vqa"
    assert task.ques_files == {s: str(root / f"{s}_questions.json") for s in ("val", "test")}
    assert task.anno_files == {s: str(root / f"{s}_annotations.json") for s in ("val", "test")}
    assert task.answer_list == easy_vqa.get_answers()
