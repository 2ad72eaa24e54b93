"""Experiment tracking for the runner: TensorBoard event files (default), Weights & Biases, or none.

``run.report_to`` chooses. TensorBoard writes its event files into the job folder beside ``log.txt``
(``tensorboard --logdir <run.output_dir>``). W&B is used only if the user installed ``wandb``; it runs
offline unless ``WANDB_MODE`` says otherwise, so a cluster node without a network loses nothing
(``wandb sync`` uploads later). Only rank 0 writes. Independently of the choice, the runner appends every
step's loss to ``LOSS_LOG`` in the job folder, which ``lavis_evlgen.tools.loss_curve`` plots.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig

from lavis_evlgen.common.config_check import ConfigError

REPORT_TO = ("tensorboard", "wandb", "none")
LOSS_LOG = "train_loss.jsonl"  # one JSON line per optimizer step in the job folder: iteration, loss, lr


def check_report_to(run: DictConfig) -> str:
    """``run.report_to`` (default ``tensorboard``); ConfigError for an unknown value or a missing wandb."""
    choice = run.get("report_to", "tensorboard")
    if choice not in REPORT_TO:
        raise ConfigError(f"run.report_to: expected one of {list(REPORT_TO)}, got {choice!r}")
    if choice == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError as err:
            raise ConfigError("run.report_to: 'wandb' needs the wandb package (pip install wandb), "
                              "or choose 'tensorboard' or 'none'") from err
    return choice


class Tracker:
    """Scalars by name and step; the base class records nothing (``report_to: none`` and ranks > 0)."""

    def log(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Record every finite number in ``values`` under ``<prefix>/<name>``; other values are left out."""
        scalars = {f"{prefix}/{k}" if prefix else k: float(v) for k, v in values.items() if _is_number(v)}
        if scalars:
            self._write(scalars, step)

    def _write(self, scalars: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def _write(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, folder: Path, job_id: str, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lavis-evlgen"), name=job_id,
                              dir=str(folder), config=config, mode=os.environ.get("WANDB_MODE", "offline"))

    def _write(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def build_tracker(run: DictConfig, folder: Path, job_id: str, config: dict[str, Any], is_main: bool) -> Tracker:
    """The tracker ``run.report_to`` names, writing into ``folder``; a silent one off rank 0."""
    choice = check_report_to(run)
    if not is_main or choice == "none":
        return Tracker()
    if choice == "wandb":
        return WandbTracker(folder, job_id, config)
    return TensorBoardTracker(folder)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value == value and abs(value) != float("inf")
