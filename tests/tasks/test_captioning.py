"""evlgen_captioning: local ground truth, COCO metrics without SPICE, duplicate removal, skip counts."""
from __future__ import annotations

import json

import pytest
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.config_check import ConfigError, check_run
from lavis_evlgen.tasks.caption_metrics import METRICS
from lavis_evlgen.tasks.captioning import EvlgenCaptionTask

CAPTIONS = {1: ["a red cat sits on the mat", "a cat on a mat"],
            2: ["a blue dog runs on the grass", "a dog running"],
            3: ["a small bird on a branch", "a bird sitting on a tree"]}


@pytest.fixture
def gt_file(tmp_path):
    anns = [{"image_id": i, "caption": c, "id": 10 * i + k} for i, cs in CAPTIONS.items() for k, c in enumerate(cs)]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": [{"id": i} for i in CAPTIONS], "annotations": anns}))
    return str(path)


class FakeDataset:
    def __init__(self, gt_file):
        self.gt_file = gt_file


@pytest.fixture(scope="module")
def tiny_model():
    from lavis_evlgen.models import load_model_and_preprocess

    model, _, _ = load_model_and_preprocess("evlgen_opt", "tiny", is_eval=True)
    return model


def make_task(**run):
    cfg = OmegaConf.create({"run": {"task": "evlgen_captioning", **run}})
    return registry.get_task_class("evlgen_captioning").setup_task(cfg=type("C", (), {"run_cfg": cfg.run})())


def test_registered_with_defaults():
    task = make_task()
    assert isinstance(task, EvlgenCaptionTask)
    assert (task.num_beams, task.max_len, task.min_len, task.report_metric) == (5, 30, 8, True)
    assert task.repetition_penalty is None  # unset: the model's own (model.repetition_penalty, default 1.0)


@pytest.mark.parametrize("value", [0, -1.5, "high", True])
def test_bad_repetition_penalty_names_the_key(value):
    with pytest.raises(ConfigError, match="run.repetition_penalty: must be a positive number"):
        make_task(repetition_penalty=value)


@pytest.mark.parametrize("task", ["evlgen_captioning", "evlgen_caption_benchmark", "evlgen_nocaps", "evlgen_scst"])
def test_every_caption_task_reads_the_caption_settings_in_one_place(task):
    run = OmegaConf.create({"task": task, "num_beams": 3, "max_len": 12, "min_len": 2, "repetition_penalty": 1.3,
                            "report_metric": False})
    made = registry.get_task_class(task).setup_task(cfg=type("C", (), {"run_cfg": run})())
    assert (made.num_beams, made.max_len, made.min_len, made.repetition_penalty, made.report_metric) == \
        (3, 12, 2, 1.3, False)
    check_run(OmegaConf.create({"run": {"task": task, "repetition_penalty": 1.3, "output_dir": "out",
                                        "batch_size_eval": 2}}), evaluate_only=True)


@pytest.mark.parametrize("task", ["image_text_pretrain", "captioning", "evlgen_vqa"])
def test_a_task_that_would_drop_the_repetition_penalty_is_refused(task):
    with pytest.raises(ConfigError, match=f"run.repetition_penalty: task '{task}' does not read it"):
        check_run(OmegaConf.create({"run": {"task": task, "repetition_penalty": 1.1}}), evaluate_only=True)


def test_valid_step_decodes_with_the_repetition_penalty(tiny_model):
    """The task's captions are the model's own with run.repetition_penalty, and the penalty changes them."""
    torch.manual_seed(0)
    samples = {"image": torch.randn(4, 3, 32, 32), "image_id": torch.arange(4)}
    decode = dict(num_beams=1, max_length=12, min_length=12)
    captions = {}
    for penalty in (1.0, 3.0):
        task = make_task(num_beams=1, max_len=12, min_len=12, repetition_penalty=penalty)
        captions[penalty] = [r["caption"] for r in task.valid_step(tiny_model, dict(samples))]
        assert captions[penalty] == tiny_model.generate(dict(samples), repetition_penalty=penalty, **decode)
    assert captions[1.0] != captions[3.0]


def test_without_run_penalty_the_model_types_penalty_applies(tiny_model):
    """A model type's penalty (the Vicuna release's 1.5) is used unless the run sets one."""
    torch.manual_seed(0)
    samples = {"image": torch.randn(4, 3, 32, 32), "image_id": torch.arange(4)}
    task = make_task(num_beams=1, max_len=12, min_len=12)
    tiny_model.repetition_penalty = 3.0
    try:
        captions = [r["caption"] for r in task.valid_step(tiny_model, dict(samples))]
        assert captions == tiny_model.generate(dict(samples), repetition_penalty=3.0, num_beams=1, max_length=12,
                                               min_length=12)
        assert captions != tiny_model.generate(dict(samples), repetition_penalty=1.0, num_beams=1, max_length=12,
                                               min_length=12)
    finally:
        tiny_model.repetition_penalty = 1.0


def test_valid_step_captions_each_image_and_counts_skips(tiny_model, gt_file):
    task = make_task(num_beams=1, max_len=3, min_len=1)
    task.before_evaluation(model=tiny_model, dataset=FakeDataset(gt_file))
    assert task.gt_file == gt_file
    results = task.valid_step(tiny_model, {"image": torch.randn(2, 3, 32, 32), "image_id": torch.tensor([3, 1]),
                                           "n_skipped": 2})
    results += task.valid_step(tiny_model, {"n_skipped": 1})
    assert [r["image_id"] for r in results] == [3, 1]
    assert all(isinstance(r["caption"], str) for r in results)
    assert task.eval_skipped == 3


def test_after_evaluation_dedups_and_reports(tmp_path, gt_file, tiny_model, monkeypatch):
    monkeypatch.setitem(registry.mapping["paths"], "result_dir", str(tmp_path))
    monkeypatch.setitem(registry.mapping["paths"], "output_dir", str(tmp_path))
    task = make_task()
    task.before_evaluation(model=tiny_model, dataset=FakeDataset(gt_file))
    task.eval_skipped = 4
    predictions = [{"image_id": 1, "caption": CAPTIONS[1][0]}, {"image_id": 2, "caption": CAPTIONS[2][0]},
                   {"image_id": 1, "caption": CAPTIONS[1][0]}]
    metrics = task.after_evaluation(val_result=predictions, split_name="val", epoch="iter5")
    merged = json.loads((tmp_path / "val_iter5.json").read_text())
    assert sorted(r["image_id"] for r in merged) == [1, 2]
    assert set(METRICS) <= set(metrics) and "SPICE" not in metrics
    assert metrics["images_unscored"] == 1
    assert metrics["skipped_samples"] == 4
    assert metrics["Bleu_4"] > 0.9 and metrics["CIDEr"] > 0
    assert metrics["agg_metrics"] == pytest.approx(metrics["CIDEr"] + metrics["Bleu_4"])
    logged = json.loads((tmp_path / "evaluate.txt").read_text().splitlines()[-1])
    assert logged["val"]["CIDEr"] == metrics["CIDEr"]


def test_missing_ground_truth_names_the_config_key(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(registry.mapping["paths"], "result_dir", str(tmp_path))
    task = make_task()
    task.before_evaluation(model=tiny_model, dataset=object())
    with pytest.raises(ValueError, match="build_info.annotations.test.gt"):
        task.after_evaluation(val_result=[{"image_id": 1, "caption": "x"}], split_name="test", epoch="eval")
