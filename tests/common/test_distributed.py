"""Process-group set-up without torchrun, and the collective helpers on a gloo group."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from lavis_evlgen.common.distributed import (
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
)


def test_single_process_on_cpu(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    run = OmegaConf.create({"device": "cuda"})
    device = init_distributed(run)
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert str(device) == expected == run.device
    assert run.distributed is False and run.world_size == 1 and run.rank == 0


def test_device_cpu_is_forced(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run = OmegaConf.create({"device": "cpu"})
    assert init_distributed(run).type == "cpu"
    assert run.gpu is None


def test_helpers_without_a_group_are_identities():
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_sum(values), values)
    assert broadcast_object({"a": 1}) == {"a": 1}
    assert all_gather_object(3) == [3]
    barrier()


def test_helpers_on_a_gloo_group(gloo_group):
    values = torch.tensor([1.5, -2.0])
    reduced = all_reduce_sum(values)
    assert torch.equal(reduced, values) and reduced is not values
    assert broadcast_object(["x", 2]) == ["x", 2]
    assert all_gather_object({"rank": 0}) == [{"rank": 0}]
    barrier()
