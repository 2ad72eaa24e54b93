"""projects/evlgen/eval: every benchmark x model, valid, with BLIP-2's settings, runnable end to end."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.config_check import check_config
from tests.datasets.benchmark_fixtures import NOCAPS, write_nocaps
from tests.runners.tiny_run import REPO, launch

EVAL = REPO / "projects/evlgen/eval"
BLIP2_EVAL = Path(os.path.dirname(__import__("lavis").__file__)) / "projects/blip2/eval"
BENCHMARKS = {"coco": ("evlgen_caption_benchmark", "test"), "flickr30k": ("evlgen_caption_benchmark", "test"),
              "nocaps": ("evlgen_nocaps", "val"), "vqav2": ("evlgen_vqa", "val"), "okvqa": ("evlgen_vqa", "test"),
              "gqa": ("evlgen_gqa", "testdev")}
MODELS = {"opt2.7b": "evlgen_opt", "vicuna7b": "evlgen_vicuna"}


def test_every_benchmark_and_model_has_a_config():
    assert {p.stem for p in EVAL.glob("*.yaml")} == {f"{b}_{m}" for b in BENCHMARKS for m in MODELS}


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_config_is_valid_and_uses_blip2_settings(benchmark, model):
    cfg = OmegaConf.load(EVAL / f"{benchmark}_{model}.yaml")
    check_config(cfg, evaluate_only=True)
    task, split = BENCHMARKS[benchmark]
    run = cfg.run
    assert (run.task, run.runner, run.evaluate, list(run.test_splits)) == (task, "runner_evlgen", True, [split])
    assert cfg.model.arch == MODELS[model]
    if task.startswith("evlgen_caption") or task == "evlgen_nocaps":
        blip2 = OmegaConf.load(BLIP2_EVAL / "caption_coco_opt2.7b_eval.yaml").run
        assert (run.num_beams, run.max_len, run.min_len) == (blip2.num_beams, blip2.max_len, blip2.min_len)
    else:
        name = {"vqav2": "vqav2", "okvqa": "okvqa", "gqa": "gqa"}[benchmark]
        blip2 = OmegaConf.load(BLIP2_EVAL / f"{name}_zeroshot_flant5xl_eval.yaml")
        for key in ("num_beams", "max_len", "min_len", "inference_method", "prompt"):
            assert run[key] == blip2.run[key], key
        assert cfg.model.get("apply_lemmatizer", False) == blip2.model.get("apply_lemmatizer", False)
    dataset = next(iter(cfg.datasets.values()))
    assert dataset.vis_processor.eval.image_size == 224


def test_nocaps_config_runs_end_to_end_on_a_tiny_model(tmp_path, monkeypatch):
    write_nocaps(tmp_path / "data")
    options = ["datasets.evlgen_nocaps.vis_processor.eval.image_size=32", "run.device=cpu", "run.num_workers=0",
               "run.batch_size_eval=4", "run.num_beams=1", "run.max_len=4", "run.min_len=1",
               f"run.output_dir={tmp_path / 'out'}"]
    monkeypatch.setenv("EVLGEN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EVLGEN_SPICE_DIR", str(tmp_path / "no_spice"))
    cfg = OmegaConf.load(EVAL / "nocaps_opt2.7b.yaml")
    cfg.model = {"arch": "evlgen_opt", "model_type": "tiny"}  # the project's data and run sections as they are
    cfg_path = tmp_path / "nocaps.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(cfg))
    proc = launch(cfg_path, *options, script="evaluate.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = tmp_path / "out/nocaps_opt2.7b"
    merged = json.loads((job / "result/val_eval.json").read_text())
    assert sorted(r["image_id"] for r in merged) == [i for i, _, _, readable in NOCAPS if readable]
    scores = json.loads((job / "evaluate.txt").read_text().splitlines()[-1])["val"]
    assert set(scores) == {"overall", "in-domain", "near-domain", "out-domain"}
    assert scores["near-domain"]["images_unscored"] == 1 and "spice_note" in scores["overall"]
