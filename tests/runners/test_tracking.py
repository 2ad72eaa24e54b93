"""Experiment tracking: TensorBoard event files from a real train.py run, read back; the report_to switch."""
from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.runners.tracking import Tracker, check_report_to
from tests.runners.tiny_run import experiment, launch, write_caption_data, write_experiment


def _scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_train_py_writes_tensorboard_scalars_beside_log_txt(tmp_path):
    data = write_caption_data(tmp_path / "data", corrupt_train=1)
    cfg = write_experiment(tmp_path / "exp.yaml", experiment(data, tmp_path / "out", max_grad_norm=1.0))
    proc = launch(cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = tmp_path / "out" / "run"
    assert (job / "log.txt").is_file() and list(job.glob("events.out.tfevents.*"))
    scalars = _scalars(job)
    for name in ("loss", "lr", "grad_norm", "steps_per_second", "samples_per_second", "skipped_samples"):
        assert [step for step, _ in scalars[f"train/{name}"]] == [1, 2, 3, 4, 5, 6], name
    assert all(v > 0 for _, v in scalars["train/grad_norm"])
    assert sum(v for _, v in scalars["train/skipped_samples"]) >= 1  # the unreadable training image
    assert [step for step, _ in scalars["val/agg_metrics"]] == [3, 6]
    assert "test/agg_metrics" in scalars
    assert "ETA" in (job / "run.log").read_text()


def test_report_to_none_writes_no_event_file(tmp_path):
    data = write_caption_data(tmp_path / "data")
    cfg = write_experiment(tmp_path / "exp.yaml", experiment(data, tmp_path / "out", report_to="none",
                                                             max_iters=2, iters_per_inner_epoch=2))
    proc = launch(cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list((tmp_path / "out" / "run").glob("events.out.tfevents.*"))


def test_unknown_report_to_is_a_config_error():
    with pytest.raises(ConfigError, match="run.report_to: expected one of"):
        check_report_to(OmegaConf.create({"report_to": "mlflow"}))


def test_wandb_without_the_package_names_the_key(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match="run.report_to: 'wandb' needs the wandb package"):
        check_report_to(OmegaConf.create({"report_to": "wandb"}))


def test_tracker_leaves_out_what_is_not_a_finite_number():
    written = {}

    class Recording(Tracker):
        def _write(self, scalars, step):
            written.update(scalars)

    Recording().log({"loss": 1.5, "lr": 1e-4, "dropped": None, "nan": float("nan"), "flag": True, "name": "x"},
                    step=3, prefix="train")
    assert written == {"train/loss": 1.5, "train/lr": 1e-4}
