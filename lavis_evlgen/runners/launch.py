"""The flow behind ``train.py`` and ``evaluate.py``: LAVIS's CLI and steps, on CPU or GPU, one or many processes.

``--cfg-path X [--options key=value ...]`` -> check the config (clear error naming the key, exit 2)
-> join torchrun's process group (nccl on GPUs, gloo on CPUs) -> seed -> task, datasets, model ->
the runner named by ``run.runner`` (default ``runner_evlgen``) -> train, or evaluate the test splits.
Exit status: 2 config error, 3 non-finite loss under ``run.on_nonfinite_loss: stop``, 4 preempted
(SIGTERM/SIGUSR1; checkpoint written, relaunch to continue), 5 a checkpoint could not be written under
``run.on_save_error: stop``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from typing import Sequence

import torch
from lavis.common.config import Config
from lavis.common.dist_utils import get_rank
from lavis.common.logger import setup_logger
from lavis.common.registry import registry
from lavis.tasks import setup_task

from lavis_evlgen.common.checkpoint import CheckpointSaveError, seed_all
from lavis_evlgen.common.cli_config import add_config_arguments, lavis_config, load_config
from lavis_evlgen.common.config_check import DEFAULT_RUNNER, ConfigError, check_config
from lavis_evlgen.common.distributed import broadcast_object, describe_process, init_distributed, shutdown_distributed
from lavis_evlgen.runners.preemption import EXIT_PREEMPTED, Preempted
from lavis_evlgen.runners.resume import job_id_for
from lavis_evlgen.runners.runner_evlgen import NonFiniteLossError

EXIT_CONFIG_ERROR = 2
EXIT_NONFINITE_LOSS = 3
EXIT_SAVE_FAILED = 5


def main(argv: Sequence[str], evaluate_only: bool) -> int:
    """Run training (or evaluation) for a LAVIS config; returns the process exit status."""
    parser = argparse.ArgumentParser(description="Evaluate a model" if evaluate_only else "Train a model")
    args = add_config_arguments(parser).parse_args(list(argv))
    try:
        check_config(load_config(args.cfg_path, args.options), evaluate_only=evaluate_only)
        cfg = lavis_config(args.cfg_path, args.options)
        if evaluate_only:
            cfg.run_cfg.evaluate = True
        run(cfg, evaluate_only)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except NonFiniteLossError as err:
        logging.error("%s", err)
        return EXIT_NONFINITE_LOSS
    except Preempted:
        return EXIT_PREEMPTED
    except CheckpointSaveError as err:
        logging.error("stopping: %s (run.on_save_error=stop)", err)
        return EXIT_SAVE_FAILED
    finally:
        shutdown_distributed()
    return 0


def run(cfg: Config, evaluate_only: bool) -> None:
    """Set up processes, logging and seeds; build task, datasets, model and runner; train or evaluate.

    The runner (and its DDP wrapper) is released on return, before the process group is shut down.
    """
    run_cfg = cfg.run_cfg
    init_distributed(run_cfg)
    setup_logger()
    logging.info(describe_process(run_cfg))
    seed_all(int(run_cfg.get("seed", 42)) + get_rank())
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    job_id = job_id_for(run_cfg, cfg.args.cfg_path, broadcast_object(datetime.now().strftime("%Y%m%d%H%M%S")))
    cfg.pretty_print()
    task = setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    runner = registry.get_runner_class(run_cfg.get("runner", DEFAULT_RUNNER))(
        cfg=cfg, job_id=job_id, task=task, model=model, datasets=datasets)
    if evaluate_only:
        runner.evaluate(cur_epoch="eval", skip_reload=True)
    else:
        runner.train()
