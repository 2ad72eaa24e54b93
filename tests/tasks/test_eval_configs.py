"""projects/evlgen/eval: every benchmark x model, valid, in the paper's zero-shot setting (the authors'
lavis/projects/EVLGen/eval configs, BLIP-2's generation settings), runnable end to end; the COCO-fine-tuned
variants are named for what they are."""
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
BENCHMARKS["coco"] = ("evlgen_caption_benchmark", "val")  # the authors' caption_coco_opt2.7b_eval.yaml: split val
MODELS = {"opt2.7b": "evlgen_opt", "vicuna7b": "evlgen_vicuna"}
PRETRAINED_ENV = {"opt2.7b": "EVLGEN_PRETRAIN_OPT2_7B", "vicuna7b": "EVLGEN_PRETRAIN_VICUNA7B"}
FINETUNED = {"coco_finetuned": "test", "nocaps_coco_finetuned": "val", "flickr30k_coco_finetuned": "test"}


def test_every_benchmark_and_model_has_a_config():
    zero_shot = {f"{b}_{m}" for b in BENCHMARKS for m in MODELS}
    assert {p.stem for p in EVAL.glob("*.yaml")} == zero_shot | {f"{b}_opt2.7b" for b in FINETUNED}


@pytest.mark.parametrize("path", sorted(EVAL.glob("*.yaml")), ids=lambda p: p.stem)
def test_configs_are_named_for_the_model_they_evaluate(path):
    """The paper's tables evaluate the pre-trained model zero-shot; a fine-tuned model says so in the name."""
    model = OmegaConf.load(path).model
    if "coco_finetuned" in path.stem:
        assert model.model_type == "caption_coco_opt2.7b" and "pretrained" not in model
    else:
        assert model.model_type.startswith("pretrain_") and "finetuned" not in model
        env = PRETRAINED_ENV[path.stem.rsplit("_", 1)[1]]
        assert OmegaConf.to_container(model)["pretrained"].startswith("${oc.env:" + env + ",")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_coco_is_the_papers_zero_shot_setting(model):
    """Table 1 / 5 COCO CIDEr: the pre-trained model, prompt "", COCO Karpathy val, beam 5, 8-30 tokens."""
    cfg = OmegaConf.load(EVAL / f"coco_{model}.yaml")
    assert (cfg.model.model_type, cfg.model.prompt) == (f"pretrain_{model}", "")
    assert cfg.datasets.evlgen_coco_caption.type == "eval" and list(cfg.run.test_splits) == ["val"]
    assert (cfg.run.num_beams, cfg.run.max_len, cfg.run.min_len) == (5, 30, 8)


@pytest.mark.parametrize("benchmark", sorted(FINETUNED))
def test_finetuned_variants_keep_blip2s_fine_tuned_protocol(benchmark):
    cfg = OmegaConf.load(EVAL / f"{benchmark}_opt2.7b.yaml")
    check_config(cfg, evaluate_only=True)
    assert list(cfg.run.test_splits) == [FINETUNED[benchmark]] and cfg.run.job_id == f"{benchmark}_opt2.7b"


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


@pytest.mark.parametrize("model", sorted(MODELS))
def test_eval_sh_all_runs_every_zero_shot_config_in_the_folder(model):
    """eval.sh keeps no list of benchmarks: "all" is every zero-shot config of the model in the folder."""
    import subprocess

    out = subprocess.run(["bash", str(REPO / "run_scripts/eval.sh"), "all", model, "1"], capture_output=True,
                         text=True, env={**os.environ, "PYTHON": "/bin/echo"}, check=True).stdout
    ran = {line.split()[1] for line in out.splitlines() if line.startswith("== ")}
    assert ran == {f"projects/evlgen/eval/{b}_{model}.yaml" for b in BENCHMARKS}
