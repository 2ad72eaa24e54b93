"""Fixtures shared by test modules in several folders."""
import pytest
import torch
import torch.distributed as dist


@pytest.fixture(scope="module")
def one_thread_and_no_leftover_group():
    """One torch thread for the module, and no process group left behind (BLIP-2 stage 1 joins a one-process
    group) for the tests after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if dist.is_initialized():
        dist.destroy_process_group()
