"""Training batches drawn whole from one dataset at a time, in fixed ratios (``run.train_dataset_ratios``).

The authors pre-train with ``laion115M : ccs14M : coco_caption = 15 : 4 : 1`` (OPT) and
``ccs14M : coco_caption = 45 : 5`` (Vicuna) through LAVIS's ``MultiIterLoader``: every micro-batch of
every process comes entirely from one dataset, picked at random with probability proportional to its
ratio, independently on each process. Dataset sizes do not enter.

Here the pick is a pure function of ``(run.seed, step, slot)``, where ``slot = micro * world_size + rank``
numbers the ``global_batch / batch_size_train`` micro-batches of one optimizer step. So:

* nothing about the picks needs saving: a resumed run makes the same picks as an uninterrupted one, and
  the checkpointed state is only each dataset's own stream position;
* the picks of a step do not depend on how its micro-batches are spread over processes: 8 processes x 1
  accumulation step and 4 processes x 2 draw the same datasets for the same step.
"""
from __future__ import annotations

import bisect
import logging
from typing import Any, Mapping, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.runners.train_loader import ResumableTrainLoader

logger = logging.getLogger(__name__)

RATIOS_KEY = "run.train_dataset_ratios"


def read_ratios(run: DictConfig) -> Optional[dict[str, float]]:
    """``run.train_dataset_ratios`` as ``{builder name: weight}``; None when unset; ConfigError when malformed."""
    ratios = run.get("train_dataset_ratios")
    if ratios is None:
        return None
    if not (OmegaConf.is_dict(ratios) or isinstance(ratios, Mapping)) or len(ratios) == 0:
        raise ConfigError(f"{RATIOS_KEY}: expected a mapping {{dataset builder name: weight}}, got {ratios!r}")
    weights = {}
    for name, value in dict(ratios).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{RATIOS_KEY}.{name}: expected a non-negative number, got {value!r}")
        weights[str(name)] = float(value)
    if sum(weights.values()) <= 0:
        raise ConfigError(f"{RATIOS_KEY}: the weights must not all be zero, got {weights}")
    return weights


def match_ratios(ratios: Mapping[str, float], training: list[str]) -> None:
    """ConfigError unless ``ratios`` names exactly the datasets that have a training split."""
    missing = sorted(set(training) - set(ratios))
    unexpected = sorted(set(ratios) - set(training))
    if missing or unexpected:
        raise ConfigError(f"{RATIOS_KEY}: must name exactly the datasets with a training split {sorted(training)}; "
                          f"missing {missing}, not training datasets {unexpected}")


def draw(seed: int, step: int, slot: int, cumulative: list[float]) -> int:
    """Index of the dataset for micro-batch ``slot`` of optimizer step ``step`` (``cumulative``: running sums)."""
    bits = np.random.SeedSequence([seed, step, slot]).generate_state(2, dtype=np.uint32)
    u = (int(bits[0]) << 32 | int(bits[1])) / 2**64
    return min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(cumulative) - 1)


class RatioTrainLoader:
    """One :class:`ResumableTrainLoader` per dataset; :meth:`source` says which one feeds a micro-batch."""

    def __init__(self, loaders: Mapping[str, ResumableTrainLoader], ratios: Mapping[str, float], seed: int,
                 rank: int, world_size: int):
        match_ratios(ratios, list(loaders))
        self.names = [name for name in loaders if ratios[name] > 0]
        self.loaders = {name: loaders[name] for name in self.names}
        self.weights = [float(ratios[name]) for name in self.names]
        self.cumulative = list(np.cumsum(self.weights))
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def describe(self) -> str:
        total = sum(self.weights)
        return "; ".join(f"{name} {w:g} ({w / total:.1%}, {len(self.loaders[name].seeded)} records)"
                         for name, w in zip(self.names, self.weights))

    def pick(self, step: int, micro: int) -> str:
        """Name of the dataset that micro-batch ``micro`` of step ``step`` on this process comes from."""
        return self.names[draw(self.seed, step, micro * self.world_size + self.rank, self.cumulative)]

    def source(self, step: int, micro: int) -> ResumableTrainLoader:
        """The stream to take micro-batch ``micro`` of step ``step`` from."""
        return self.loaders[self.pick(step, micro)]

    @property
    def epoch(self) -> dict[str, int]:
        """Data epoch of each dataset's stream."""
        return {name: loader.epoch for name, loader in self.loaders.items()}

    def state_dict(self) -> dict[str, Any]:
        """Each dataset's stream position (the picks themselves are recomputed)."""
        return {"datasets": {name: loader.state_dict() for name, loader in self.loaders.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        positions = state.get("datasets")
        if positions is None or set(positions) != set(self.loaders):
            raise ValueError(f"run.resume_ckpt_path: the checkpoint's data position {sorted(positions or state)} does "
                             f"not match the ratio-mixed datasets {sorted(self.loaders)}")
        for name, position in positions.items():
            self.loaders[name].load_state_dict(position)

    @staticmethod
    def portable(state: Mapping[str, Any]) -> dict[str, Any]:
        """``state`` for another world size: each dataset's :meth:`ResumableTrainLoader.portable` position."""
        return {"datasets": {name: ResumableTrainLoader.portable(p) for name, p in state["datasets"].items()}}
