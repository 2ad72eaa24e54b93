"""Cluster rules of runner_evlgen: failed saves by policy, automatic resume and its warnings, preemption.

The training runs call train.py's ``main`` in this process on the tiny model (a second each); the
fault drill (tests/tools/test_fault_drill.py) kills and signals real processes.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal

import pytest
import torch
from omegaconf import OmegaConf

from lavis_evlgen.runners.launch import EXIT_SAVE_FAILED, main
from lavis_evlgen.runners.preemption import PreemptionWatch
from lavis_evlgen.runners.resume import job_id_for, run_signature, signature_changes
from tests.runners.tiny_run import experiment, write_caption_data, write_experiment


@pytest.fixture
def tiny(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)
    data = write_caption_data(tmp_path / "data", n_train=4)
    config = experiment(data, tmp_path / "out", valid_splits=[], test_splits=[], max_iters=3,
                        iters_per_inner_epoch=3, save_every_iters=1, keep_last_k=3, auto_resume=True)
    del config["run"]["job_id"]
    return write_experiment(tmp_path / "exp.yaml", config)


def train(cfg, *options: str) -> int:
    return main(["--cfg-path", str(cfg), *(["--options", *options] if options else [])], evaluate_only=False)


def iteration_of(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["iteration"]


def test_failed_save_stops_or_continues_by_config_and_the_relaunch_resumes(tiny, tmp_path, caplog):
    job = tmp_path / "out" / "exp"  # auto_resume without run.job_id: the experiment file's name
    (job / "checkpoint_2.pth").mkdir(parents=True)  # the save of iteration 2 fails (as a full disk would)
    assert train(tiny) == EXIT_SAVE_FAILED
    assert f"could not save the checkpoint of iteration 2 to {job / 'checkpoint_2.pth'}" in caplog.text
    assert "free space in" in caplog.text
    assert iteration_of(job / "checkpoint_latest.pth") == 1
    assert not [p for p in os.listdir(job) if p.startswith(".tmp-")]
    caplog.clear()
    assert train(tiny, "run.on_save_error=continue") == 0
    assert f"auto_resume: resuming from {job / 'checkpoint_latest.pth'} (iteration 1)" in caplog.text
    assert "training goes on without the checkpoint of iteration 2" in caplog.text
    assert iteration_of(job / "checkpoint_latest.pth") == 3 and (job / "checkpoint_2.pth").is_dir()


def test_relaunch_resumes_and_names_every_setting_that_breaks_exactness(tiny, tmp_path, caplog):
    assert train(tiny, "run.max_iters=2") == 0
    assert "auto_resume: no checkpoint in" in caplog.text
    caplog.clear()
    assert train(tiny, "run.batch_size_train=1", "run.seed=7") == 0
    job = tmp_path / "out" / "exp"
    assert f"auto_resume: resuming from {job / 'checkpoint_latest.pth'} (iteration 2)" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume: ")]
    assert [w.split(" changed")[0] for w in warnings] == ["resume: batch_size_train", "resume: seed",
                                                          "resume: global batch"], warnings
    assert iteration_of(job / "checkpoint_latest.pth") == 3


def test_signature_accepts_another_world_size_that_keeps_the_global_batch():
    config = OmegaConf.create({"run": {"batch_size_train": 4, "seed": 1, "train_splits": ["train"]},
                               "datasets": {"coco": {"build_info": {"root": "x"}}}})
    eight = run_signature(config, world_size=8, accum_grad_iters=1)
    four = run_signature(config, world_size=4, accum_grad_iters=2)
    assert signature_changes(eight, eight) == []
    lines = signature_changes(eight, four)
    assert len(lines) == 3 and "global batch 32 kept on 4 process(es) (checkpoint: 8)" in lines[-1]
    assert not any("global batch changed" in line for line in lines)
    other_data = OmegaConf.merge(config, {"datasets": {"coco": {"build_info": {"root": "y"}}}})
    assert [line.split(" changed")[0] for line in
            signature_changes(eight, run_signature(other_data, 8, 1))] == ["resume: data"]


def test_job_id_is_stable_under_auto_resume():
    run = OmegaConf.create({"auto_resume": True})
    assert job_id_for(run, "projects/x/pretrain_opt2.7b_250k.yaml", "20260101") == "pretrain_opt2.7b_250k"
    assert job_id_for(OmegaConf.create({"auto_resume": True, "job_id": "j"}), "a.yaml", "t") == "j"
    assert job_id_for(OmegaConf.create({}), "a.yaml", "20260101") == "20260101"


def test_preemption_watch_records_the_first_signal_and_restores_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with PreemptionWatch() as watch:
        assert not watch.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert watch.requested and PreemptionWatch.name(watch.received) == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before


def _second_signal_child() -> None:
    with PreemptionWatch():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(0)  # not reached: the second signal ends the process


def test_second_signal_exits_at_once_with_128_plus_the_signal():
    proc = multiprocessing.get_context("fork").Process(target=_second_signal_child)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 128 + signal.SIGTERM


class SignalAt(logging.Handler):
    """Sends ``sig`` to this process when a log line containing ``text`` is emitted (mid-step)."""

    def __init__(self, text: str, sig: int):
        super().__init__()
        self.text, self.sig = text, sig

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            os.kill(os.getpid(), self.sig)


def test_preemption_at_an_inner_epoch_end_saves_first_and_leaves_validation_to_the_relaunch(tiny, tmp_path, caplog):
    handler = SignalAt("iteration 2/4", signal.SIGTERM)
    logging.getLogger().addHandler(handler)
    try:
        code = train(tiny, "run.max_iters=4", "run.iters_per_inner_epoch=2", "run.save_every_iters=4")
    finally:
        logging.getLogger().removeHandler(handler)
    job = tmp_path / "out" / "exp"
    assert code == 4
    assert (f"preempted by SIGTERM: stopped after iteration 2, checkpoint {job / 'checkpoint_latest.pth'} "
            "(iteration 2)") in caplog.text
    saved = torch.load(job / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 2 and saved["pending_validation"] is True
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored after training
    assert train(tiny, "run.max_iters=4", "run.iters_per_inner_epoch=2", "run.save_every_iters=4") == 0
    assert iteration_of(job / "checkpoint_latest.pth") == 4


def test_a_signal_after_the_last_step_lets_the_run_finish_and_says_so(tiny, tmp_path, caplog):
    handler = SignalAt("saved checkpoint at iteration 3", signal.SIGUSR1)
    logging.getLogger().addHandler(handler)
    try:
        code = train(tiny)
    finally:
        logging.getLogger().removeHandler(handler)
    assert code == 0
    assert "SIGUSR1 arrived after the last step: the final checkpoint and evaluation are complete" in caplog.text
    assert caplog.text.index("arrived after the last step") < caplog.text.index("training time")
    assert iteration_of(tmp_path / "out" / "exp" / "checkpoint_latest.pth") == 3
