"""Validation curves of the comparison and what is read from them: time to a target, seed spread, lr choice.

A curve is a method's validation points in order of its step budget (``Point``: steps, training seconds,
wall seconds, val CIDEr). Time to target is read at the first validated point at or above the target
(no interpolation between points: the answer is only as fine as ``compare.eval_every``). Seeds are
summarised by mean and sample standard deviation; a difference between two methods is called only when
it is larger than the sum of their standard deviations (``differs``).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


@dataclass
class Point:
    """One validation of a method's run: where in the budget, after how long, and how good."""

    steps: int
    train_seconds: float
    wall_seconds: float
    cider: float
    grounding: dict[str, int] = field(default_factory=dict)


@dataclass
class Spread:
    """Mean and sample standard deviation over seeds; ``n`` values, ``missing`` seeds without one."""

    mean: float
    std: float
    n: int
    missing: int = 0

    def text(self, scale: float = 1.0, digits: int = 1) -> str:
        if self.n == 0:
            return "not reached"
        body = f"{self.mean * scale:.{digits}f}"
        if self.n > 1:
            body += f" ± {self.std * scale:.{digits}f}"
        return body + (f" ({self.n} of {self.n + self.missing} seeds)" if self.missing else "")


def first_reach(points: Sequence[Point], target: float) -> Optional[Point]:
    """The first point whose CIDEr is at least ``target``, or None if the curve never gets there."""
    for point in points:
        if point.cider >= target:
            return point
    return None


def spread(values: Sequence[Optional[float]]) -> Spread:
    """Mean and sample standard deviation of the values that exist (None: a seed without one)."""
    present = [float(v) for v in values if v is not None]
    missing = len(values) - len(present)
    if not present:
        return Spread(math.nan, math.nan, 0, missing)
    std = statistics.stdev(present) if len(present) > 1 else math.nan
    return Spread(statistics.fmean(present), std, len(present), missing)


def differs(a: Spread, b: Spread) -> bool:
    """Whether ``a`` and ``b`` differ by more than their spread (both need two or more seeds)."""
    if a.n < 2 or b.n < 2:
        return False
    return abs(a.mean - b.mean) > a.std + b.std


def choose_lr(final_cider: dict[float, float]) -> float:
    """The lr whose run ended with the highest val CIDEr; on a tie the smaller lr."""
    if not final_cider:
        raise ValueError("choose_lr: no sweep results")
    return min(final_cider, key=lambda lr: (-final_cider[lr], lr))


def per_stage_sum(steps: int, stage_steps: Sequence[tuple[int, float]]) -> float:
    """The cost of a method's first ``steps`` steps; ``stage_steps``: (steps, cost of one step) of each stage in
    order, so a step counts at the cost of the stage it falls in (integer costs sum exactly)."""
    total, left = 0, steps
    for count, cost in stage_steps:
        taken = min(count, left)
        total += taken * cost
        left -= taken
    return total


def connector_macs_to(steps: int, stage_steps: Sequence[tuple[int, int]], global_batch: int) -> int:
    """Forward connector MACs of a method's first ``steps`` steps; ``stage_steps``: (steps, MACs per sample)
    of each stage in order."""
    return int(per_stage_sum(steps, [(count, macs * global_batch) for count, macs in stage_steps]))


def summary_row(points_by_seed: dict[int, Sequence[Point]], target: float) -> dict[str, Any]:
    """Per-seed steps and seconds to reach ``target`` (None where not reached) and their spread."""
    reached = {seed: first_reach(points, target) for seed, points in points_by_seed.items()}
    return {"target": target,
            "steps": {seed: p.steps if p else None for seed, p in reached.items()},
            "train_seconds": {seed: p.train_seconds if p else None for seed, p in reached.items()},
            "steps_spread": spread([p.steps if p else None for p in reached.values()]),
            "train_seconds_spread": spread([p.train_seconds if p else None for p in reached.values()])}
