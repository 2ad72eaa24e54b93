"""Automatic resume: a stable job folder, where to resume from, and what changed since the checkpoint.

* Job folder: ``run.output_dir/<job id>``. The job id is ``run.job_id`` when given (the paper configs
  set it); otherwise, with ``run.auto_resume``, the experiment file's name without ``.yaml``, so that
  relaunching the same command finds the same folder; otherwise a launch timestamp (LAVIS's choice).
* ``run.auto_resume: true`` continues from the job folder's ``checkpoint_latest.pth`` (or the newest
  readable numbered checkpoint if the latest is unreadable) when ``run.resume_ckpt_path`` is not given.
* Every checkpoint stores a :func:`run_signature` (batch per process, processes, accumulation, global
  batch, seed, a hash of the data config); :func:`signature_changes` lists what differs at resume, one
  line per difference. A different world size that keeps the global batch keeps the schedule and is
  reported, not refused.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

DATA_RUN_KEYS = ("train_splits", "train_dataset_ratios", "train_dataset_length")


def job_id_for(run_cfg: DictConfig, cfg_path: Optional[str], timestamp: str) -> str:
    """``run.job_id``; else, under ``run.auto_resume``, the experiment file's stem; else ``timestamp``."""
    if run_cfg.get("job_id"):
        return str(run_cfg.job_id)
    if run_cfg.get("auto_resume", False) and cfg_path:
        return Path(cfg_path).name.removesuffix(".yaml").removesuffix(".yml")
    return timestamp


def data_hash(config: DictConfig) -> str:
    """A short hash of what decides the training data: ``datasets`` and the run's data keys."""
    run = config.get("run", {})
    data = {"datasets": OmegaConf.to_container(config.get("datasets", {}), resolve=True),
            **{k: OmegaConf.to_container(run[k], resolve=True) if OmegaConf.is_config(run[k]) else run[k]
               for k in DATA_RUN_KEYS if run.get(k) is not None}}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_signature(config: DictConfig, world_size: int, accum_grad_iters: int) -> dict[str, Any]:
    """What an exact continuation needs unchanged (stored in every checkpoint)."""
    run = config.run
    batch = int(run.batch_size_train)
    return {"batch_size_train": batch, "world_size": world_size, "accum_grad_iters": accum_grad_iters,
            "global_batch": batch * world_size * accum_grad_iters, "seed": int(run.get("seed", 42)),
            "data": data_hash(config)}


def signature_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One line per difference between a checkpoint's signature and this run's (empty: exact resume)."""
    lines = []
    for key, consequence in (("batch_size_train", "the per-process batch differs"),
                             ("world_size", "the number of processes differs"),
                             ("accum_grad_iters", "the accumulation differs"),
                             ("seed", "random streams differ from the run the checkpoint continues"),
                             ("data", "the training data config differs; the saved data position may not fit")):
        if key in saved and saved[key] != now[key]:
            lines.append(f"resume: {key} changed from {saved[key]} (checkpoint) to {now[key]}: {consequence}, "
                         f"so the continuation is not exact")
    if "global_batch" in saved and saved["global_batch"] != now["global_batch"]:
        lines.append(f"resume: global batch changed from {saved['global_batch']} (checkpoint) to "
                     f"{now['global_batch']}: the optimisation is not the one the checkpoint started")
    elif saved.get("world_size", now["world_size"]) != now["world_size"]:
        lines.append(f"resume: global batch {now['global_batch']} kept on {now['world_size']} process(es) "
                     f"(checkpoint: {saved['world_size']}); the schedule continues at the saved iteration")
    return lines
