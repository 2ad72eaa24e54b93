"""The few unavoidable patches to LAVIS 1.0.2 globals, applied idempotently on import.

Each patch names the LAVIS line it fixes. Everything else is done by subclassing and registering
(see ``lavis_evlgen.runners.runner_evlgen`` and ``lavis_evlgen.common.distributed``).
"""
import lavis.common.optims  # noqa: F401  lr_sched classes register only when this module is imported
import torch
import torch.distributed as dist
from lavis.common import dist_utils
from lavis.common.logger import SmoothedValue


def _synchronize_meter(self: SmoothedValue) -> None:
    """Sum a meter's count and total over all ranks, on the device the process group works on.

    Fixes lavis/common/logger.py:43, which always allocates the tensor with ``device="cuda"`` and
    so fails under the gloo backend on CPU.
    """
    if not dist_utils.is_dist_avail_and_initialized():
        return
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    totals = torch.tensor([self.count, self.total], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    self.count = int(totals[0].item())
    self.total = totals[1].item()


SmoothedValue.synchronize_between_processes = _synchronize_meter
