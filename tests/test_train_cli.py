"""train.py and evaluate.py from the command line: one CPU process, tiny model, tiny data on disk."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tests.runners.tiny_run import experiment, launch, write_caption_data, write_experiment


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run: 4 iterations, validation at the end, checkpoints every 2 iterations.

    ``run.output_dir`` is relative ("out"): it must land under the working directory (the tmp folder).
    """
    root = tmp_path_factory.mktemp("cli")
    data = write_caption_data(root / "data", n_train=4)
    cfg = write_experiment(root / "exp.yaml", experiment(
        data, "out", max_iters=4, iters_per_inner_epoch=4, save_every_iters=2, init_lr=1e-2, min_lr=1e-3))
    return root, cfg, launch(cfg)


def test_train_logs_loss_metrics_and_writes_checkpoints(trained):
    root, _, proc = trained
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = root / "out" / "run"
    train = [json.loads(line) for line in (out / "log.txt").read_text().splitlines() if line.startswith('{"train_')]
    assert train[-1]["train_iteration"] == 4 and math.isfinite(train[-1]["train_loss"])
    evaluations = [json.loads(line) for line in (out / "evaluate.txt").read_text().splitlines()]
    assert [next(iter(e)) for e in evaluations] == ["val", "test"]
    assert all("CIDEr" in next(iter(e.values())) for e in evaluations)
    for name in ("checkpoint_2.pth", "checkpoint_4.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
        assert (out / name).is_file(), name
    best = torch.load(out / "checkpoint_best.pth", weights_only=False)
    assert best["iteration"] == 4 and best["best"]["iteration"] == 4
    run_log = (out / "run.log").read_text()
    assert "precision: fp32 on cpu" in run_log and "iteration 4/4  loss" in run_log
    test = json.loads((out / "result" / "test_best.json").read_text())
    assert sorted(r["image_id"] for r in test) == [7, 8, 9]


def test_evaluate_reproduces_the_test_captions_of_the_best_checkpoint(trained):
    root, cfg, _ = trained
    best = root / "out" / "run" / "checkpoint_best.pth"

    def captions(job: str) -> list:
        results = json.loads((root / "out" / job / "result" / "test_eval.json").read_text())
        return sorted((r["image_id"], r["caption"]) for r in results)

    proc = launch(cfg, f"model.finetuned={best}", "run.job_id=eval", script="evaluate.py")
    assert proc.returncode == 0, proc.stderr[-4000:]
    training = json.loads((root / "out" / "run" / "result" / "test_best.json").read_text())
    assert captions("eval") == sorted((r["image_id"], r["caption"]) for r in training)
    assert "CIDEr" in json.loads((root / "out" / "eval" / "evaluate.txt").read_text())["test"]
    assert not list((root / "out" / "eval").glob("checkpoint_*"))
    proc = launch(cfg, "run.job_id=untrained", "run.report_metric=False", script="evaluate.py")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert captions("untrained") != captions("eval")


@pytest.mark.parametrize("option, message", [
    ("model.arch=foo", "config error: model.arch: unknown model 'foo'; registered: ["),
    ("run.batch_size_train=null", "config error: run.batch_size_train: missing"),
])
def test_config_errors_name_the_key(trained, option, message):
    _, cfg, _ = trained
    proc = launch(cfg, option)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
