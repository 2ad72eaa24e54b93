"""The paper's per-step schedule: linear warm-up, then cosine decay to min_lr at max_iters."""
from __future__ import annotations

import math

import pytest
import torch
from lavis.common.registry import registry

import lavis_evlgen  # noqa: F401


def make(**kwargs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    cls = registry.get_lr_scheduler_class("linear_warmup_cosine_iter_lr")
    settings = dict(init_lr=1e-4, min_lr=1e-5, warmup_start_lr=1e-6, warmup_steps=5000, max_iters=250_000,
                    iters_per_epoch=5000)
    settings.update(kwargs)
    return optimizer, cls(optimizer=optimizer, max_epoch=50, **settings)


def test_paper_schedule_values():
    _, sched = make()
    assert sched.lr_at(0) == pytest.approx(1e-6)
    assert sched.lr_at(2500) == pytest.approx(1e-6 + (1e-4 - 1e-6) / 2)
    assert sched.lr_at(5000) == pytest.approx(1e-4)
    middle = 5000 + (250_000 - 5000) // 2
    assert sched.lr_at(middle) == pytest.approx(1e-5 + (1e-4 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert sched.lr_at(250_000) == pytest.approx(1e-5)
    values = [sched.lr_at(s) for s in range(5000, 250_001, 5000)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_step_uses_the_global_step_from_epoch_and_step():
    optimizer, sched = make(iters_per_epoch=1000)
    sched.step(cur_epoch=3, cur_step=250)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(sched.lr_at(3250))


def test_without_max_iters_names_the_key():
    with pytest.raises(ValueError, match="run.max_iters"):
        make(max_iters=None)
