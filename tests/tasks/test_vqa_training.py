"""VQA fine-tuning with the captioning loss: the batch conversion, and train.py on easy-VQA from cached features
(conditioned TomeFormer), validated with the VQA accuracy."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

import lavis_evlgen
from lavis_evlgen.tasks.vqa import answer_samples
from tests.models.test_tomeformer import minilm_path
from tests.runners.tiny_run import launch


def test_answer_samples_puts_the_question_in_the_prompt_and_the_top_answer_as_text():
    batch = {"image": torch.zeros(2, 3, 4, 4), "text_input": ["what colour?", "is it round?"],
             "answer": ["red", "blue", "red", "yes"], "weight": torch.tensor([0.3, 0.6, 0.1, 1.0]),
             "n_answers": torch.tensor([3, 1])}
    out = answer_samples(batch, "Question: {} Short answer:")
    assert out["prompt"] == ["Question: what colour? Short answer:", "Question: is it round? Short answer:"]
    assert out["text_input"] == ["blue", "yes"]
    assert set(out) == {"image", "prompt", "text_input"}
    with pytest.raises(ValueError, match="n_answers"):
        answer_samples({"text_input": ["q"]}, "{}")


def test_the_loss_reads_the_question_only_through_the_prompt():
    torch.manual_seed(0)
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen_opt", "tiny", is_eval=True)
    image = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="model.max_txt_len: 32 tokens leave no caption token"):
        model({"image": image, "prompt": ["Question: what colour is it? Short answer:"], "text_input": ["red"]})
    model.max_txt_len = 64
    batch = {"image": image, "answer": ["red"], "weight": torch.tensor([1.0]), "n_answers": torch.tensor([1])}
    losses = [model(answer_samples({**batch, "text_input": [q]}, "Question: {} Short answer:"))["loss"]
              for q in ("what colour is it?", "what shape is it?")]
    direct = model({"image": image, "prompt": ["Question: what colour is it? Short answer:"], "text_input": ["red"]})
    assert torch.equal(losses[0], direct["loss"]) and not torch.equal(losses[0], losses[1])


def test_train_py_fine_tunes_on_easy_vqa_from_cached_features(tmp_path):
    cfg = {
        "model": {"arch": "evlgen_opt", "model_type": "tiny", "max_txt_len": 64,
                  "tomeformer": {"bert": str(minilm_path()), "num_layers": 2, "r": 2, "condition": True}},
        "datasets": {"easy_vqa": {
            "build_info": {"root": str(tmp_path / "data"),
                           "generate": {"seed": 0, "n_train": 16, "n_val": 6, "n_test": 4, "val_images": 8}},
            "vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32},
                              "eval": {"name": "blip_image_eval", "image_size": 32}}}},
        "run": {"task": "evlgen_vqa", "runner": "runner_evlgen", "lr_sched": "linear_warmup_cosine_iter_lr",
                "init_lr": 1e-4, "min_lr": 1e-5, "warmup_lr": 1e-6, "warmup_steps": 1, "weight_decay": 0.05,
                "max_iters": 4, "iters_per_inner_epoch": 4, "batch_size_train": 4, "batch_size_eval": 3,
                "num_workers": 0, "feature_cache": True, "feature_cache_dir": str(tmp_path / "features"),
                "seed": 0, "output_dir": str(tmp_path / "out"), "job_id": "vqa", "train_splits": ["train"],
                "valid_splits": ["val"], "num_beams": 1, "max_len": 3, "evaluate": False, "distributed": False},
    }
    path = tmp_path / "vqa.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = launch(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "feature cache written" in proc.stdout + proc.stderr
    losses = [json.loads(line) for line in (tmp_path / "out" / "vqa" / "train_loss.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in losses] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in losses)
    [val] = [json.loads(line)["val"] for line in (tmp_path / "out" / "vqa" / "evaluate.txt").read_text().splitlines()]
    assert val["questions_scored"] == 6 and 0 <= val["overall"] <= 100
