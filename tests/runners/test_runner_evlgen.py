"""runner_evlgen end to end through train.py: gloo processes, exact resume, non-finite losses.

Each test launches train.py (or torch.distributed.run) as a subprocess on the tiny evlgen_opt model
and a few random images on disk.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.runners.tiny_run import checkpoint_params, experiment, launch, write_caption_data, write_experiment


def stats(out: Path, prefix: str) -> list[dict]:
    lines = (out / "log.txt").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"' + prefix)]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_gloo_processes_train_skip_unreadable_and_evaluate(tmp_path):
    data = write_caption_data(tmp_path / "data", n_train=3, corrupt_train=2, n_val=3, n_test=2, corrupt_test=1)
    cfg = write_experiment(tmp_path / "exp.yaml", experiment(
        data, tmp_path / "out", max_iters=2, iters_per_inner_epoch=2, batch_size_train=4))
    proc = launch(cfg, nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "out" / "run"
    train = stats(out, "train_")[-1]
    # 8 training records (2 unreadable) over 2 ranks x 4 per batch = one data epoch per iteration.
    assert train["train_skipped_samples"] == 4
    assert train["train_data_epoch"] == 1
    assert "process 0 of 2 on cpu (gloo process group)" in proc.stderr
    val = json.loads((out / "result" / "val_iter2.json").read_text())
    assert sorted(r["image_id"] for r in val) == [5, 6, 7]  # 3 images, padded to 4 across ranks
    test = stats(out, "test_")[-1]
    assert test["test_skipped_samples"] == 1 and test["test_images_unscored"] == 1
    assert "CIDEr" in json.loads((out / "evaluate.txt").read_text().splitlines()[-1])["test"]
    assert (out / "checkpoint_best.pth").is_file()
    assert torch.load(out / "checkpoint_latest.pth", weights_only=False)["world_size"] == 2


@pytest.mark.parametrize("nproc, workers", [(1, 1), (2, 0)])
def test_resume_continues_exactly(tmp_path, nproc, workers):
    data = write_caption_data(tmp_path / "data", n_train=4)
    run = dict(max_iters=6, iters_per_inner_epoch=3, save_every_iters=2, keep_last_k=4, valid_splits=[],
               test_splits=[], num_workers=workers)
    full = write_experiment(tmp_path / "full.yaml", experiment(
        data, tmp_path / "out", train_processor="blip_image_train", job_id="full", **run))
    proc = launch(full, nproc=nproc)
    assert proc.returncode == 0, proc.stderr[-4000:]
    first_half = tmp_path / "out" / "full" / "checkpoint_2.pth"
    resumed = write_experiment(tmp_path / "resumed.yaml", experiment(
        data, tmp_path / "out", train_processor="blip_image_train", job_id="resumed", **run))
    proc = launch(resumed, f"run.resume_ckpt_path={first_half}", nproc=nproc)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from" in proc.stderr and "at iteration 2" in proc.stderr
    end_full = tmp_path / "out" / "full" / "checkpoint_6.pth"
    end_resumed = tmp_path / "out" / "resumed" / "checkpoint_6.pth"
    assert max_difference(checkpoint_params(end_full), checkpoint_params(first_half)) > 1e-4
    assert max_difference(checkpoint_params(end_full), checkpoint_params(end_resumed)) <= 1e-6
    a, b = (torch.load(p, weights_only=False) for p in (end_full, end_resumed))
    assert a["data_position"] == b["data_position"]
    assert a["data_position"][0]["epoch"] >= 1  # the runs crossed a data-epoch boundary
    moments = [s["exp_avg"] for s in a["optimizer"]["state"].values()]
    assert all(torch.allclose(m, n, atol=1e-9) for m, n in
               zip(moments, [s["exp_avg"] for s in b["optimizer"]["state"].values()]))


def diverging(tmp_path: Path, policy: str) -> tuple:
    data = write_caption_data(tmp_path / "data", n_train=4)
    cfg = write_experiment(tmp_path / "exp.yaml", experiment(
        data, tmp_path / "out", max_iters=6, iters_per_inner_epoch=6, save_every_iters=1, keep_last_k=10,
        valid_splits=[], test_splits=[], init_lr=1e30, warmup_lr=1e30, min_lr=1e30, on_nonfinite_loss=policy))
    return launch(cfg), tmp_path / "out" / "run"


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    proc, out = diverging(tmp_path, "stop")
    assert proc.returncode == 3
    assert "non-finite training loss (nan) at step 2" in proc.stderr
    assert "last good checkpoint: " + str(out / "checkpoint_latest.pth") + " (iteration 1)" in proc.stderr
    assert torch.load(out / "checkpoint_latest.pth", weights_only=False)["iteration"] == 1
    assert not (out / "checkpoint_2.pth").exists()


def test_nonfinite_loss_skip_drops_updates_and_counts_them(tmp_path):
    proc, out = diverging(tmp_path, "skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stats(out, "train_")[-1]["train_nonfinite_steps"] == 5
    assert max_difference(checkpoint_params(out / "checkpoint_1.pth"), checkpoint_params(out / "checkpoint_6.pth")) == 0


def test_epoch_based_config_with_a_lavis_scheduler(tmp_path):
    data = write_caption_data(tmp_path / "data", n_train=4)  # 8 records: 4 batches of 2 per data epoch
    config = experiment(data, tmp_path / "out", valid_splits=[], test_splits=[], max_epoch=2,
                        lr_sched="linear_warmup_cosine_lr")
    for key in ("max_iters", "iters_per_inner_epoch", "save_every_iters"):
        del config["run"][key]
    proc = launch(write_experiment(tmp_path / "exp.yaml", config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out" / "run"
    train = stats(out, "train_")
    assert [s["train_iteration"] for s in train] == [4, 8]
    assert train[0]["train_lr"] == pytest.approx(1e-3)  # warmed up within epoch 0
    assert train[1]["train_lr"] == pytest.approx(1e-4 + (1e-3 - 1e-4) * 0.5)  # LAVIS cosine at epoch 1 of 2
    assert (out / "checkpoint_4.pth").is_file() and (out / "checkpoint_8.pth").is_file()


def test_max_grad_norm_clips_the_update(tmp_path):
    """AdamW is scale-free except for eps: a vanishing clip norm leaves the first step almost motionless."""
    data = write_caption_data(tmp_path / "data", n_train=4)
    moved = {}
    for name, clip in (("free", None), ("clipped", 1e-12)):
        run = dict(valid_splits=[], test_splits=[], max_iters=1, iters_per_inner_epoch=1, save_every_iters=1,
                   warmup_steps=0)
        if clip is not None:
            run["max_grad_norm"] = clip
        config = experiment(data, tmp_path / name, **run)
        proc = launch(write_experiment(tmp_path / f"{name}.yaml", config))
        assert proc.returncode == 0, proc.stderr[-3000:]
        after = checkpoint_params(tmp_path / name / "run" / "checkpoint_1.pth")
        moved[name] = after["proj1.weight"]
    assert (moved["free"] - moved["clipped"]).abs().max().item() > 1e-5  # identical seeds: only the clip differs
