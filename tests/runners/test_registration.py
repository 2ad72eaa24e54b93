"""Importing lavis_evlgen registers the runner, task, scheduler and models with LAVIS."""
from __future__ import annotations

from lavis.common.registry import registry

import lavis_evlgen  # noqa: F401
from lavis_evlgen.runners.runner_evlgen import RunnerEvlgen
from lavis_evlgen.tasks.captioning import EvlgenCaptionTask


def test_registry_names():
    assert registry.get_runner_class("runner_evlgen") is RunnerEvlgen
    assert registry.get_task_class("evlgen_captioning") is EvlgenCaptionTask
    assert registry.get_lr_scheduler_class("linear_warmup_cosine_iter_lr") is not None
    assert registry.get_model_class("evlgen_opt") is not None


def test_model_zoo_lists_evlgen_models():
    from lavis.models import model_zoo

    assert "tiny" in model_zoo.model_zoo["evlgen_opt"]
    assert "evlgen_opt" in str(model_zoo)
