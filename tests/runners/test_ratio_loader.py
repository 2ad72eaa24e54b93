"""run.train_dataset_ratios: one dataset per micro-batch in the authors' ratios, stateless picks, exact resume."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from lavis_evlgen.common.config_check import ConfigError, check_run
from lavis_evlgen.runners.ratio_loader import RatioTrainLoader, match_ratios, read_ratios
from lavis_evlgen.runners.train_loader import ResumableTrainLoader

OPT_RATIOS = {"laion115M": 15, "ccs14M": 4, "coco_caption": 1}       # lavis/projects/EVLGen/train/pretrain_opt2.7b.yaml
VICUNA_RATIOS = {"ccs14M": 45, "coco_caption": 5}                   # .../pretrain_vicuna7b.yaml


class Labelled(Dataset):
    """Item i is {"source": label index, "x": i, "noise": <random>}."""

    def __init__(self, label: int, n: int):
        self.label, self.n = label, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"source": torch.tensor(self.label), "x": torch.tensor(i), "noise": torch.rand(())}


def mixture(ratios, sizes=None, rank=0, world_size=1, seed=7, batch_size=2):
    sizes = sizes or {name: (6 + 3 * k) * world_size for k, name in enumerate(ratios)}
    loaders = {name: ResumableTrainLoader(Labelled(k, sizes[name]), None, batch_size, 0, seed, rank, world_size, False)
               for k, name in enumerate(ratios)}
    return RatioTrainLoader(loaders, ratios, seed, rank, world_size)


@pytest.mark.parametrize("ratios", [OPT_RATIOS, VICUNA_RATIOS])
def test_picks_follow_the_ratios_over_many_batches(ratios):
    loader = mixture(ratios)
    steps, slots = 10_000, 8
    counts = Counter(loader.pick(step, micro) for step in range(steps) for micro in range(slots))
    total = sum(ratios.values())
    for name, weight in ratios.items():
        share, expected = counts[name] / (steps * slots), weight / total
        sigma = (expected * (1 - expected) / (steps * slots)) ** 0.5
        assert abs(share - expected) < 5 * sigma, (name, share, expected)


def test_sizes_do_not_enter_and_zero_weights_are_never_drawn():
    small_coco = mixture({"big": 1, "coco": 1}, sizes={"big": 1000, "coco": 4})
    counts = Counter(small_coco.pick(step, 0) for step in range(4000))
    assert abs(counts["coco"] / 4000 - 0.5) < 0.05
    zero = mixture({"a": 1, "b": 0})
    assert zero.names == ["a"] and {zero.pick(step, 0) for step in range(200)} == {"a"}


def test_each_batch_comes_whole_from_the_picked_dataset():
    loader = mixture(VICUNA_RATIOS)
    for step in range(30):
        name = loader.pick(step, 0)
        batch = next(loader.source(step, 0))
        assert set(batch["source"].tolist()) == {loader.names.index(name)}


def test_picks_depend_on_the_step_slot_not_on_the_process_layout():
    """8 processes x 1 micro-batch, 4 x 2 and 1 x 8 draw the same dataset for every slot of a step."""
    def layout(world_size, accum):
        picks = {}
        for rank in range(world_size):
            loader = mixture(OPT_RATIOS, rank=rank, world_size=world_size)
            for step in range(50):
                for micro in range(accum):
                    picks[step, micro * world_size + rank] = loader.pick(step, micro)
        return picks

    eight = layout(8, 1)
    assert eight == layout(4, 2) == layout(1, 8)
    assert len(set(eight.values())) == 3
    assert layout(8, 1) != {key: mixture(OPT_RATIOS, seed=8).pick(*key) for key in eight}  # the seed matters


def run_steps(loader, first, steps, accum):
    batches = []
    for step in range(first, first + steps):
        for micro in range(accum):
            batches.append(next(loader.source(step, micro)))
    return batches


@pytest.mark.parametrize("accum", [1, 3])
def test_n_steps_stop_resume_n_more_equals_2n_straight(accum):
    uninterrupted = mixture(OPT_RATIOS)
    straight = run_steps(uninterrupted, 0, 40, accum)
    first = mixture(OPT_RATIOS)
    run_steps(first, 0, 20, accum)
    state = first.state_dict()
    assert set(state) == {"datasets"} and set(state["datasets"]) == set(OPT_RATIOS)
    resumed = mixture(OPT_RATIOS)
    resumed.load_state_dict(state)
    rest = run_steps(resumed, 20, 20, accum)
    assert len(rest) == 20 * accum
    for a, b in zip(straight[20 * accum:], rest):
        assert all(torch.equal(a[key], b[key]) for key in ("source", "x", "noise"))
    assert resumed.state_dict() == uninterrupted.state_dict()
    assert set(resumed.epoch) == set(OPT_RATIOS) and max(resumed.epoch.values()) >= 1  # streams wrapped around
    with pytest.raises(ValueError, match="does not match"):
        mixture(VICUNA_RATIOS).load_state_dict(state)


def test_ratios_must_name_exactly_the_training_datasets():
    with pytest.raises(ConfigError, match=r"missing \['c'\], not training datasets \['x'\]"):
        match_ratios({"a": 1, "b": 1, "x": 1}, ["a", "b", "c"])
    for bad in ([1, 2], {"a": -1}, {"a": 0}, {"a": "many"}, {}):
        with pytest.raises(ConfigError, match="run.train_dataset_ratios"):
            read_ratios(OmegaConf.create({"train_dataset_ratios": bad}))
    assert read_ratios(OmegaConf.create({"train_dataset_ratios": OPT_RATIOS})) == {k: float(v) for k, v in
                                                                                   OPT_RATIOS.items()}


def test_a_runner_that_would_ignore_the_ratios_is_refused():
    run = {"task": "evlgen_captioning", "runner": "runner_iter", "train_dataset_ratios": VICUNA_RATIOS}
    with pytest.raises(ConfigError, match="run.train_dataset_ratios: honoured by runner runner_evlgen only"):
        check_run(OmegaConf.create({"run": run}), evaluate_only=False)
    epoch_based = {"task": "evlgen_captioning", "runner": "runner_evlgen", "train_dataset_ratios": VICUNA_RATIOS,
                   "max_epoch": 2, "output_dir": "out", "train_splits": ["train"], "batch_size_train": 2,
                   "lr_sched": "linear_warmup_cosine_iter_lr", "init_lr": 1e-4, "min_lr": 1e-5, "weight_decay": 0.05}
    with pytest.raises(ConfigError, match="needs run.max_iters"):
        check_run(OmegaConf.create({"run": epoch_based}), evaluate_only=False)
