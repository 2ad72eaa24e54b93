"""``run.global_batch_size``: the samples of one optimizer step, whatever the number of processes.

The paper trains at 1600 = 200 per GPU x 8 GPUs. With ``run.global_batch_size: 1600`` and
``run.batch_size_train: 200`` the runner derives the gradient-accumulation steps from the launched
world size (8 processes: 1 step, 4: 2, 2: 4, 1: 8), so a schedule of ``max_iters`` steps means the same
on any GPU count; a world size that does not divide it is refused with a message saying what to set.
Without the key, ``run.accum_grad_iters`` (default 1) is used as given.
"""
from __future__ import annotations

from omegaconf import DictConfig

from lavis_evlgen.common.config_check import ConfigError

KEY = "run.global_batch_size"


def _positive_int(run: DictConfig, key: str) -> int | None:
    value = run.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"run.{key}: must be an integer >= 1, got {value!r}")
    return value


def check_global_batch(run: DictConfig) -> None:
    """The world-size-free part: ``global_batch_size`` is a multiple of ``batch_size_train``."""
    global_batch = _positive_int(run, "global_batch_size")
    if global_batch is None:
        return
    per_process = _positive_int(run, "batch_size_train")
    if per_process is None:
        raise ConfigError(f"run.batch_size_train: missing (needed with {KEY}={global_batch})")
    if global_batch % per_process:
        raise ConfigError(f"{KEY}={global_batch} is not a multiple of run.batch_size_train={per_process}: "
                          f"set run.batch_size_train to a divisor of {global_batch}")


def accumulation_steps(run: DictConfig, world_size: int) -> int:
    """Micro-batches per optimizer step on ``world_size`` processes (ConfigError naming what to set)."""
    check_global_batch(run)
    global_batch = run.get("global_batch_size")
    configured = _positive_int(run, "accum_grad_iters")
    if global_batch is None:
        return configured or 1
    per_process = int(run.batch_size_train)
    per_step = per_process * world_size
    if global_batch % per_step:
        slots = global_batch // per_process
        counts = [n for n in range(1, slots + 1) if slots % n == 0]
        raise ConfigError(
            f"{KEY}={global_batch} with run.batch_size_train={per_process} is {slots} micro-batches per step, "
            f"which {world_size} process(es) cannot share evenly ({per_process} x {world_size} = {per_step} does "
            f"not divide {global_batch}): launch a process count among {counts}, or set run.batch_size_train so "
            f"that batch_size_train x {world_size} divides {global_batch}")
    derived = global_batch // per_step
    if configured is not None and configured != derived:
        raise ConfigError(f"run.accum_grad_iters={configured} contradicts {KEY}={global_batch} = "
                          f"{per_process} per process x {world_size} process(es) x {derived}: remove "
                          f"run.accum_grad_iters (it is derived from {KEY})")
    return derived
