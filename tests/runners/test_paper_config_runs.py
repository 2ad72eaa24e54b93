"""The paper's OPT pre-training config runs as written through train.py: the authors' three datasets mixed
15 : 4 : 1 per micro-batch, the global batch, their scheduler and COCO-val validation, at toy size."""
from __future__ import annotations

import json
import math

import pytest
from omegaconf import OmegaConf

from tests.datasets.benchmark_fixtures import write_coco, write_shards
from tests.runners.test_runner_evlgen import stats
from tests.runners.tiny_run import REPO, launch

PAPER = REPO / "projects/evlgen/train/pretrain_opt2.7b_250k.yaml"


def test_pretrain_opt27b_config_runs_with_its_protocol_on_toy_data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_coco(data)
    write_shards(data, n_shards=2)
    cfg = OmegaConf.load(PAPER)
    cfg.model = {"arch": "evlgen_opt", "model_type": "tiny"}  # everything else as the paper config has it
    for name in ("laion115M", "ccs14M"):
        cfg.datasets[name].vis_processor.train.image_size = 32
        cfg.datasets[name].build_info = {"shards": "laion/{00000..00001}.tar", "num_samples": 8}
    coco = cfg.datasets.evlgen_coco_caption
    coco.vis_processor.train.image_size = coco.vis_processor.eval.image_size = 32
    coco.build_info = {"derived_dir": str(tmp_path / "derived")}
    cfg.run.update({"max_iters": 4, "iters_per_inner_epoch": 2, "save_every_iters": 2, "warmup_steps": 2,
                    "global_batch_size": 4, "batch_size_train": 2, "batch_size_eval": 2, "num_workers": 0,
                    "num_beams": 1, "max_len": 4, "min_len": 1, "amp": False, "device": "cpu",
                    "output_dir": str(tmp_path / "out")})
    path = tmp_path / "paper.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    monkeypatch.setenv("EVLGEN_DATA", str(data))
    proc = launch(path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stderr
    assert "global batch 4 = 2 per process x 1 process(es) x 2 accumulation step(s)" in log
    assert "laion115M 15 (75.0%" in log and "ccs14M 4 (20.0%" in log and "evlgen_coco_caption 1 (5.0%" in log
    assert log.count("2 shard(s) named, 2 found, 0 named but absent, 1 .tar file(s)") == 2  # one per builder
    out = tmp_path / "out" / "pretrain_opt2.7b_250k"
    train = stats(out, "train_")
    assert [s["train_iteration"] for s in train] == [2, 4]
    # The authors' scheduler: step 1 is half-way through the warm-up, inner epoch 1 of 2 is cos(pi / 2).
    assert train[0]["train_lr"] == pytest.approx(1e-6 + (1e-4 - 1e-6) / 2)
    assert train[1]["train_lr"] == pytest.approx(1e-5 + 9e-5 * 0.5 * (1 + math.cos(math.pi / 2)))
    val = stats(out, "val_")
    assert len(val) == 2 and "val_CIDEr" in val[-1]
    assert json.loads((out / "result" / "val_iter4.json").read_text())[0]["image_id"] == 21  # Karpathy val
    assert (out / "checkpoint_latest.pth").is_file()
