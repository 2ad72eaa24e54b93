"""A run resumed on fewer processes keeps the global batch (more accumulation) and the schedule position."""
from __future__ import annotations

import json

from tests.runners.tiny_run import experiment, launch, write_caption_data, write_experiment


def _steps(job) -> dict[int, dict]:
    return {r["iteration"]: r for r in map(json.loads, (job / "train_loss.jsonl").read_text().splitlines())}


def test_two_processes_then_one_keeps_global_batch_and_schedule(tmp_path):
    data = write_caption_data(tmp_path / "data", n_train=12)
    run = dict(global_batch_size=4, batch_size_train=2, max_iters=6, iters_per_inner_epoch=3, save_every_iters=3,
               keep_last_k=4)
    two = write_experiment(tmp_path / "two.yaml", experiment(data, tmp_path / "two", **run))
    proc = launch(two, nproc=2, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first_job = tmp_path / "two" / "run"
    first_log = (first_job / "run.log").read_text()
    assert "global batch 4 = 2 per process x 2 process(es) x 1 accumulation step(s)" in first_log

    one = write_experiment(tmp_path / "one.yaml", experiment(data, tmp_path / "one", **run))
    proc = launch(one, f"run.resume_ckpt_path={first_job / 'checkpoint_3.pth'}", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "one" / "run" / "run.log").read_text()
    assert "global batch 4 = 2 per process x 1 process(es) x 2 accumulation step(s)" in log
    assert "resumed from" in log and "at iteration 3" in log
    before, after = _steps(first_job), _steps(tmp_path / "one" / "run")
    assert sorted(after) == [4, 5, 6]
    assert [after[i]["lr"] for i in (4, 5, 6)] == [before[i]["lr"] for i in (4, 5, 6)]
