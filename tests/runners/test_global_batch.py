"""run.global_batch_size: accumulation derived from the launched world size, or one error saying what to set."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.runners.global_batch import accumulation_steps, check_global_batch


def run(**keys):
    return OmegaConf.create(keys)


@pytest.mark.parametrize("world_size, accum", [(8, 1), (4, 2), (2, 4), (1, 8)])
def test_the_paper_batch_means_the_same_on_any_gpu_count(world_size, accum):
    paper = run(global_batch_size=1600, batch_size_train=200)
    assert accumulation_steps(paper, world_size) == accum
    assert 200 * world_size * accum == 1600


def test_a_world_size_that_does_not_divide_is_refused_naming_what_to_set():
    with pytest.raises(ConfigError) as err:
        accumulation_steps(run(global_batch_size=1600, batch_size_train=200), 3)
    message = str(err.value)
    for part in ("run.global_batch_size=1600", "run.batch_size_train=200", "3 process(es)",
                 "launch a process count among [1, 2, 4, 8]", "set run.batch_size_train"):
        assert part in message, part
    with pytest.raises(ConfigError, match="not a multiple of run.batch_size_train=300"):
        check_global_batch(run(global_batch_size=1600, batch_size_train=300))
    with pytest.raises(ConfigError, match="run.global_batch_size: must be an integer"):
        check_global_batch(run(global_batch_size=0, batch_size_train=2))


def test_explicit_accumulation_must_agree_and_stays_as_given_without_the_key():
    with pytest.raises(ConfigError, match="run.accum_grad_iters=1 contradicts run.global_batch_size=1600"):
        accumulation_steps(run(global_batch_size=1600, batch_size_train=200, accum_grad_iters=1), 4)
    assert accumulation_steps(run(global_batch_size=1600, batch_size_train=200, accum_grad_iters=2), 4) == 2
    assert accumulation_steps(run(batch_size_train=200, accum_grad_iters=3), 5) == 3
    assert accumulation_steps(run(batch_size_train=200), 5) == 1
