"""Process-group set-up for torchrun on GPUs (nccl) or CPUs (gloo), and small collective helpers.

LAVIS's ``init_distributed_mode`` (lavis/common/dist_utils.py:72-73) always calls
``torch.cuda.set_device`` and picks nccl, so it cannot run on CPU. :func:`init_distributed` reads
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) instead and picks the backend from the hardware.
"""
from __future__ import annotations

import datetime
import gc
import os
from typing import Any

import torch
import torch.distributed as dist
from lavis.common.dist_utils import is_dist_avail_and_initialized, setup_for_distributed
from omegaconf import DictConfig


def init_distributed(run_cfg: DictConfig) -> torch.device:
    """Join torchrun's process group if there is one and record the outcome in ``run_cfg``.

    Sets ``run_cfg.distributed``, ``run_cfg.rank``, ``run_cfg.world_size``, ``run_cfg.gpu`` (the local
    rank, or None on CPU), ``run_cfg.dist_backend`` and ``run_cfg.device`` ("cuda:N" or "cpu").
    ``run.device: cpu`` forces CPU even when GPUs exist; any other value uses a GPU when one is there.
    Returns the device this process computes on.
    """
    use_cuda = torch.cuda.is_available() and str(run_cfg.get("device", "cuda")) != "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    distributed = world_size > 1
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if distributed and not dist.is_initialized():
        timeout = datetime.timedelta(seconds=int(run_cfg.get("dist_timeout_s", 3600)))
        dist.init_process_group(backend=backend, init_method=run_cfg.get("dist_url", "env://"),
                                world_size=world_size, rank=rank, timeout=timeout)
        setup_for_distributed(rank == 0)
    run_cfg.distributed = distributed
    run_cfg.rank = rank
    run_cfg.world_size = world_size
    run_cfg.gpu = local_rank if use_cuda else None
    run_cfg.dist_backend = backend if distributed else None
    run_cfg.device = str(device)
    return device


def describe_process(run_cfg: DictConfig) -> str:
    """One log line: this process's rank, the world size, device and backend (after init_distributed)."""
    group = f" ({run_cfg.dist_backend} process group)" if run_cfg.distributed else ""
    return f"process {run_cfg.rank} of {run_cfg.world_size} on {run_cfg.device}{group}"


def collective_device() -> torch.device:
    """Where tensors for collectives must live: the current GPU under nccl, else the CPU."""
    if is_dist_avail_and_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank; a no-op without a process group (LAVIS's runner_base.py:406 always calls it)."""
    if is_dist_avail_and_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over ranks (a copy; the input is untouched); identity in one process."""
    if not is_dist_avail_and_initialized():
        return values.clone()
    out = values.detach().to(collective_device(), copy=True)
    dist.all_reduce(out)
    return out.to(values.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects); identity in one process."""
    if not is_dist_avail_and_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order; ``[obj]`` in one process."""
    if not is_dist_avail_and_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown_distributed() -> None:
    """Leave the process group, if any, once every rank is done (end of train.py / evaluate.py).

    Collects garbage first: a DDP wrapper kept alive by a reference cycle holds the gloo group, whose
    worker threads would otherwise be torn down during interpreter exit and abort the process.
    """
    if is_dist_avail_and_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
