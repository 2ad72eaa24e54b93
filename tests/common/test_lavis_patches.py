"""The LAVIS patch for meter synchronisation works on a CPU (gloo) process group and is idempotent."""
from __future__ import annotations

import importlib

from lavis.common.logger import MetricLogger, SmoothedValue

from lavis_evlgen.common import lavis_patches


def test_meter_sync_runs_on_gloo_and_survives_reimport(gloo_group):
    importlib.reload(lavis_patches)
    assert SmoothedValue.synchronize_between_processes is lavis_patches._synchronize_meter
    metrics = MetricLogger()
    metrics.update(loss=2.0)
    metrics.update(loss=4.0)
    metrics.synchronize_between_processes()
    assert metrics.meters["loss"].count == 2
    assert metrics.meters["loss"].global_avg == 3.0


def test_lr_schedulers_are_registered():
    from lavis.common.registry import registry

    assert registry.get_lr_scheduler_class("linear_warmup_cosine_lr") is not None
