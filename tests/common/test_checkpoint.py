"""Atomic checkpoint writes, retention, trainable-only state dicts and RNG capture."""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import random
import resource
import signal

import numpy as np
import pytest
import torch
from torch import nn

from lavis_evlgen.common import checkpoint as ckpt
from lavis_evlgen.common.checkpoint import (
    CheckpointManager,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    load_trainable_state_dict,
    restore_rng_state,
    trainable_state_dict,
)


def state(iteration: int) -> dict:
    return {"iteration": iteration, "weights": torch.full((256,), float(iteration))}


def crash_while(target: str, folder: str) -> int:
    """In a forked child: save iteration 1, then die (os._exit) inside the save of iteration 2."""

    def child():
        manager = CheckpointManager(folder, keep_last_k=3)
        manager.save(state(1), 1)
        real_save = torch.save
        if target == "write":
            def dying_save(obj, f):
                buf = io.BytesIO()
                real_save(obj, buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os._exit(17)
            ckpt.torch.save = dying_save
        else:
            def dying_link(src, dst):
                os._exit(17)
            ckpt.os.link = dying_link
        manager.save(state(2), 2)
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(60)
    return proc.exitcode


def test_atomic_save_round_trip_leaves_no_temporary(tmp_path):
    atomic_save(state(3), tmp_path / "x.pth")
    assert torch.equal(load_checkpoint(tmp_path / "x.pth")["weights"], state(3)["weights"])
    assert os.listdir(tmp_path) == ["x.pth"]


def test_crash_mid_write_keeps_latest_at_previous_good_checkpoint(tmp_path):
    assert crash_while("write", str(tmp_path)) == 17
    latest = load_checkpoint(tmp_path / "checkpoint_latest.pth")
    assert latest["iteration"] == 1
    assert torch.equal(latest["weights"], state(1)["weights"])
    assert not (tmp_path / "checkpoint_2.pth").exists()
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    assert leftovers, "the crash should have left the partial temporary file behind"
    CheckpointManager(tmp_path, keep_last_k=3)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_crash_before_latest_is_swapped_keeps_previous_latest(tmp_path):
    assert crash_while("link", str(tmp_path)) == 17
    assert load_checkpoint(tmp_path / "checkpoint_latest.pth")["iteration"] == 1
    assert load_checkpoint(tmp_path / "checkpoint_2.pth")["iteration"] == 2


def test_keep_last_k_prunes_numbered_files_but_latest_and_best_survive(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last_k=2)
    for it in range(1, 6):
        manager.save(state(it), it, is_best=(it == 2))
    assert [it for it, _ in manager.numbered()] == [4, 5]
    assert load_checkpoint(manager.latest_path)["iteration"] == 5
    assert load_checkpoint(manager.best_path)["iteration"] == 2


def test_keep_last_zero_keeps_only_latest(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last_k=0)
    manager.save(state(1), 1)
    manager.save(state(2), 2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_latest.pth"]
    assert load_checkpoint(manager.latest_path)["iteration"] == 2


def test_negative_keep_last_k_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="run.keep_last_k"):
        CheckpointManager(tmp_path, keep_last_k=-1)


def test_unreadable_checkpoint_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="bad.pth"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")


class Partly(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(3, 3).requires_grad_(False)
        self.head = nn.Linear(3, 2)
        self.register_buffer("counter", torch.zeros(1))


def test_trainable_state_dict_drops_frozen_parameters_only():
    keys = set(trainable_state_dict(Partly()))
    assert keys == {"head.weight", "head.bias", "counter"}


def test_load_trainable_state_dict_restores_and_rejects_missing_keys():
    src, dst = Partly(), Partly()
    load_trainable_state_dict(dst, trainable_state_dict(src), "src")
    assert torch.equal(dst.head.weight, src.head.weight)
    assert not torch.equal(dst.frozen.weight, src.frozen.weight)
    partial = trainable_state_dict(src)
    del partial["head.bias"]
    with pytest.raises(ValueError, match="head.bias"):
        load_trainable_state_dict(dst, partial, "partial.pth")


def test_rng_state_round_trip():
    saved = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(saved)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])


@contextlib.contextmanager
def file_size_limit(limit: int):
    """A real write failure: the kernel refuses to grow any file past ``limit`` bytes (EFBIG), as on a full
    disk or an exhausted quota; SIGXFSZ is ignored so that the write raises instead of killing pytest."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def big_state(iteration: int) -> dict:
    return {"iteration": iteration, "weights": torch.full((200_000,), float(iteration))}


def test_failed_save_keeps_previous_latest_logs_path_and_free_space_and_prunes_nothing(tmp_path, caplog):
    manager = CheckpointManager(tmp_path, keep_last_k=1)
    manager.save(state(1), 1)
    with file_size_limit(100_000), pytest.raises(ckpt.CheckpointSaveError) as failure:
        manager.save(big_state(2), 2)
    message = str(failure.value)
    assert str(tmp_path / "checkpoint_2.pth") in message and "free space in" in message and "MiB" in message
    assert any(r.levelname == "ERROR" and "checkpoint_2.pth" in r.getMessage() for r in caplog.records)
    assert load_checkpoint(manager.latest_path)["iteration"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1.pth", "checkpoint_latest.pth"]  # no half file, no prune
    manager.save(state(3), 3)  # the disk has room again
    assert [it for it, _ in manager.numbered()] == [3]


def test_newest_readable_falls_back_past_unreadable_files(tmp_path, caplog):
    manager = CheckpointManager(tmp_path, keep_last_k=3)
    assert manager.newest_readable() is None
    for it in (1, 2, 3):
        manager.save(state(it), it)
    path, loaded = manager.newest_readable()
    assert path == manager.latest_path and loaded["iteration"] == 3
    with open(manager.latest_path, "r+b") as f:  # bit rot hits the file: both its names
        f.truncate(100)
    path, loaded = manager.newest_readable()
    assert path.name == "checkpoint_2.pth" and loaded["iteration"] == 2
    assert "is unreadable: resuming from" in caplog.text
    path, _ = manager.newest_readable(check=lambda s: (_ for _ in ()).throw(ValueError("wrong format"))
                                      if s["iteration"] == 2 else None)
    assert path.name == "checkpoint_1.pth"
    for p in tmp_path.iterdir():
        p.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="no readable checkpoint"):
        manager.newest_readable()
