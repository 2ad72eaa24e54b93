"""runner_evlgen through train.py with the paper's protocol keys: ratio-mixed data and a global batch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.datasets.benchmark_fixtures import write_capfilt
from tests.runners.test_runner_evlgen import max_difference, stats
from tests.runners.tiny_run import checkpoint_params, experiment, launch, write_caption_data, write_experiment

RATIOS = {"caption_folder": 1, "evlgen_capfilt_ccs": 3}


def mixed_experiment(tmp_path: Path, job_id: str, **run) -> dict:
    """caption_folder (random images) + evlgen_capfilt_ccs (CapFilt list, two unreadable images), by ratio."""
    config = experiment(tmp_path / "data", tmp_path / "out", train_processor="blip_image_train", job_id=job_id,
                        valid_splits=[], test_splits=[], **run)
    write_capfilt(tmp_path / "capfilt_root")
    processor = {"name": "blip_image_train", "image_size": 32}
    config["datasets"]["evlgen_capfilt_ccs"] = {
        "build_info": {"root": str(tmp_path / "capfilt_root"),
                       "annotations": {"train": {"storage": "capfilt/ccs.json"}},
                       "images": {"storage": "capfilt/images"}, "records_dir": str(tmp_path / "records")},
        "vis_processor": {"train": processor}, "text_processor": {"train": {"name": "blip_caption"}}}
    return config


def test_ratio_mixed_training_resumes_exactly_with_derived_accumulation(tmp_path):
    write_caption_data(tmp_path / "data", n_train=4)
    run = dict(max_iters=6, iters_per_inner_epoch=3, save_every_iters=3, keep_last_k=4, global_batch_size=4,
               batch_size_train=2, train_dataset_ratios=RATIOS)
    full = write_experiment(tmp_path / "full.yaml", mixed_experiment(tmp_path, "full", **run))
    proc = launch(full)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert ("global batch 4 = 2 per process x 1 process(es) x 2 accumulation step(s) (derived from "
            "run.global_batch_size)") in proc.stderr
    assert "one dataset per micro-batch by run.train_dataset_ratios: caption_folder 1 (25.0%" in proc.stderr
    assert "evlgen_capfilt_ccs 3 (75.0%, 5 records)" in proc.stderr
    out = tmp_path / "out" / "full"
    train = stats(out, "train_")[-1]
    assert set(train["train_data_epoch"]) == set(RATIOS)
    assert train["train_skipped_samples"] > 0  # CapFilt's unreadable images were drawn, so that dataset was read

    resumed = write_experiment(tmp_path / "resumed.yaml", mixed_experiment(tmp_path, "resumed", **run))
    proc = launch(resumed, f"run.resume_ckpt_path={out / 'checkpoint_3.pth'}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "at iteration 3" in proc.stderr
    end_full, end_resumed = out / "checkpoint_6.pth", tmp_path / "out" / "resumed" / "checkpoint_6.pth"
    assert max_difference(checkpoint_params(end_full), checkpoint_params(out / "checkpoint_3.pth")) > 1e-4
    assert max_difference(checkpoint_params(end_full), checkpoint_params(end_resumed)) <= 1e-6
    a, b = (torch.load(p, weights_only=False)["data_position"] for p in (end_full, end_resumed))
    assert a == b and set(a[0]["datasets"]) == set(RATIOS)


@pytest.mark.parametrize("global_batch, accepted", [(6, False), (4, True)])
def test_the_launched_world_size_sets_the_accumulation_or_is_refused(tmp_path, global_batch, accepted):
    data = write_caption_data(tmp_path / "data", n_train=4)
    cfg = write_experiment(tmp_path / "exp.yaml", experiment(
        data, tmp_path / "out", max_iters=1, iters_per_inner_epoch=1, valid_splits=[], test_splits=[],
        batch_size_train=2, global_batch_size=global_batch))
    proc = launch(cfg, nproc=2)
    if accepted:
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "global batch 4 = 2 per process x 2 process(es) x 1 accumulation step(s)" in proc.stderr
    else:
        assert proc.returncode != 0 and "exitcode  : 2" in proc.stderr, proc.stderr[-4000:]  # torchrun: 1
        assert ("config error: run.global_batch_size=6 with run.batch_size_train=2 is 3 micro-batches per step, "
                "which 2 process(es) cannot share evenly") in proc.stderr
        assert "launch a process count among [1, 3]" in proc.stderr
