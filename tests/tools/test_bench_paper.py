"""bench_paper: the paper-size models build from their shipped configs with random weights, and the timing
runs end to end on tiny models on the CPU, with each step's work counted against the device's ceiling."""
from __future__ import annotations

import json

import pytest
import torch
from accelerate import init_empty_weights
from lavis.common.registry import registry

from lavis_evlgen.tools import bench_paper
from lavis_evlgen.tools.bench_paper import PAPER_MODELS, ModelTiming, captions, main, random_weights_config
from lavis_evlgen.tools.bench_step import Ceiling, Spread

TINY = "evlgen_opt:tiny,blip2_stage1:tiny,blip2_stage2_opt:tiny"


@pytest.mark.parametrize("spec", PAPER_MODELS)
def test_paper_models_build_at_full_size_from_random_weights(spec):
    arch, model_type = spec.split(":")
    cfg = random_weights_config(arch, model_type, "bf16")
    assert cfg.vision.weights is None and cfg.vision.name == "eva_clip_g"
    with init_empty_weights():
        model = registry.get_model_class(arch).from_config(cfg)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total > (3.5e9 if "opt" in arch else 1.1e9)  # EVA-ViT-g (1.0 B) and OPT-2.7b where there is an LLM
    assert 80e6 < trainable < 250e6  # the connector only: bert-base size


def test_tiny_models_train_and_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = main(["--models", TINY, "--batch", "4", "--steps", "2", "--warmup", "1", "--dtype", "fp32",
                    "--device", "cpu", "--json", str(out)])
    assert [r.model for r in results] == TINY.split(",")
    for r in results:
        assert r.batch == 4 and r.step is not None and r.step.median > 0 and r.trainable_params > 0
        assert r.flops_per_step > 0
    printed = capsys.readouterr().out
    assert printed.count("| evlgen_opt:tiny | 4 |") == 1 and "| blip2_stage1:tiny | 4 |" in printed
    assert "ceiling: " in printed and "GFLOP/s, one float32 [2048, 2048]" in printed
    saved = json.loads(out.read_text())
    assert saved["dtype"] == "fp32" and len(saved["results"]) == 3
    assert saved["ceiling"]["flops_per_s"] > 0 and saved["results"][0]["flops_per_step"] == results[0].flops_per_step


def test_counted_work_grows_with_the_batch():
    """The counted step is the training step's: twice the samples, about twice the FLOPs (AdamW adds none)."""
    small, large = (bench_paper.time_model("evlgen_opt:tiny", b, 2, 0, "fp32", torch.device("cpu"), 12)
                    for b in (2, 4))
    assert 1.8 < large.flops_per_step / small.flops_per_step < 2.2


def test_row_gives_the_rate_and_its_share_of_the_ceiling():
    timing = ModelTiming("m:t", 8, Spread.of([0.5, 0.5, 0.5]), 16.0, 10 ** 6, None, "", 4 * 10 ** 12)
    ceiling = Ceiling(16e12, 8192, "bfloat16")
    assert timing.share_of(ceiling) == pytest.approx(0.5)
    assert bench_paper.format_row(timing, ceiling).endswith("| 4 | 8 (50%) |")


def test_a_batch_that_does_not_fit_is_halved_and_the_row_says_so(monkeypatch):
    real = bench_paper.run_steps

    def run_steps(model, optimizer, batch, *args):
        if batch > 2:  # a CPU cannot run out of device memory on demand: stand in for the GPU's error
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(model, optimizer, batch, *args)

    monkeypatch.setattr(bench_paper, "run_steps", run_steps)
    timing = bench_paper.time_model("evlgen_opt:tiny", 8, 2, 0, "fp32", torch.device("cpu"), 12)
    assert timing.batch == 2 and timing.note == "8 did not fit"
    assert "| evlgen_opt:tiny | 2 (8 did not fit) |" in bench_paper.format_row(timing, Ceiling(1e9, 2048, "float32"))


def test_captions_have_the_requested_byte_length():
    texts = captions(5, 20, torch.Generator().manual_seed(0))
    assert len(texts) == 5 and all(len(t.encode()) == 20 for t in texts)
