"""Every stage's training step timed in turns in one process: step costs that a drifting machine slows alike.

A comparison's runs take hours and may span commands and machines, and a shared CPU's speed drifts by more
than the methods differ (on one 2-core Xeon the same EVLGen recipe trained at 0.84 s a step in one run and at
1.3-2.0 s in the next, nothing else running in the guest). So ``compare.step_cost`` builds every stage's runner
from its run config in one process and times ``runner.train_step`` (next batch, autocast, forward, backward,
clipping, optimizer) stage after stage, round after round, after untimed warm-up rounds. A slow spell then
slows every stage alike, and each stage's median is its step cost; a method's time to a target is re-read as
the steps it spent in each stage times that stage's cost (``compare_curves.per_stage_sum``).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from lavis.common.config import Config
from lavis.tasks import setup_task

from lavis_evlgen.common.checkpoint import seed_all
from lavis_evlgen.common.distributed import init_distributed
from lavis_evlgen.runners.runner_evlgen import RunnerEvlgen, close_log_file


def build_runner(config_path: Path, wrap: Optional[Callable[[dict], dict]] = None,
                 runner_class: type[RunnerEvlgen] = RunnerEvlgen, **runner_args: Any) -> RunnerEvlgen:
    """The runner of one run config (``runner_class``, given ``runner_args``), seeded, with its datasets built;
    ``wrap`` replaces the datasets (the comparison's cached ViT features). Training and step timing both use it."""
    cfg = Config(argparse.Namespace(cfg_path=str(config_path), options=[]))
    init_distributed(cfg.run_cfg)
    seed_all(int(cfg.run_cfg.seed))
    task = setup_task(cfg)
    datasets = task.build_datasets(cfg)
    if wrap is not None:
        datasets = wrap(datasets)
    return runner_class(cfg=cfg, job_id=Path(config_path).parent.name, task=task, model=task.build_model(cfg),
                        datasets=datasets, **runner_args)


def ready_to_step(runner: RunnerEvlgen) -> RunnerEvlgen:
    """``runner`` with its optimizer, schedule and loader built and its model in train mode."""
    _ = runner.optimizer, runner.lr_scheduler, runner.train_loader
    runner.model.train()
    return runner


def time_in_turns(runners: dict[str, Any], steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of ``steps`` optimizer steps of each runner, the runners taking turns step by step after
    ``warmup`` untimed rounds."""
    if steps < 2 or warmup < 0:
        raise ValueError(f"compare.step_cost: steps must be at least 2 and warmup at least 0, got {steps}, {warmup}")
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(warmup + steps):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.train_step()
            if runner.device.type == "cuda":
                torch.cuda.synchronize(runner.device)
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    close_log_file()
    return seconds


def summarise(seconds: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and count of one stage's timed steps."""
    q1, _, q3 = statistics.quantiles(seconds, n=4, method="inclusive")
    return {"median": statistics.median(seconds), "q1": q1, "q3": q3, "steps": len(seconds)}
