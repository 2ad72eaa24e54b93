"""A one-process gloo group for tests of collective helpers on CPU."""
from __future__ import annotations

import pytest
import torch.distributed as dist


@pytest.fixture
def gloo_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
