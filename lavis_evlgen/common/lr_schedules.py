"""``linear_warmup_cosine_iter_lr``: the paper's per-step schedule, registered with LAVIS.

LAVIS's ``linear_warmup_cosine_lr`` warms up inside epoch 0 only and then decays once per epoch.
EVLGen trains by steps: linear warm-up from ``run.warmup_lr`` to ``run.init_lr`` over
``run.warmup_steps`` steps (paper: 1e-6 -> 1e-4 over 5k), then a cosine decay to ``run.min_lr``
(paper: 1e-5) reached at ``run.max_iters``. The learning rate is a pure function of the step, so
resuming needs only the step.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from lavis.common.registry import registry


@registry.register_lr_scheduler("linear_warmup_cosine_iter_lr")
class LinearWarmupCosineIterLRScheduler:
    """LAVIS scheduler interface: ``step(cur_epoch, cur_step)`` sets the rate for the coming update.

    ``cur_epoch * iters_per_epoch + cur_step`` is the 0-based global step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, init_lr: float, min_lr: float,
                 max_iters: Optional[int] = None, iters_per_epoch: Optional[int] = None,
                 warmup_steps: int = 0, warmup_start_lr: float = -1, **kwargs):
        if not max_iters or not iters_per_epoch:
            raise ValueError("run.lr_sched: linear_warmup_cosine_iter_lr needs run.max_iters "
                             "(use run.runner: runner_evlgen, which passes it)")
        self.optimizer = optimizer
        self.init_lr = float(init_lr)
        self.min_lr = float(min_lr)
        self.max_iters = int(max_iters)
        self.iters_per_epoch = int(iters_per_epoch)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_lr = float(warmup_start_lr) if warmup_start_lr >= 0 else self.init_lr

    def lr_at(self, step: int) -> float:
        """Learning rate for the update at 0-based global ``step``."""
        if step < self.warmup_steps:
            return self.warmup_start_lr + (self.init_lr - self.warmup_start_lr) * step / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.max_iters - self.warmup_steps, 1), 1.0)
        return self.min_lr + (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def step(self, cur_epoch: int, cur_step: int) -> None:
        lr = self.lr_at(cur_epoch * self.iters_per_epoch + cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
