"""Up-front checks of an experiment config, so mistakes surface as one line naming the key.

LAVIS's ``Config`` and ``setup_task`` meet an unknown name with an assert or a ``NoneType`` error deep
inside; :func:`check_config` looks at the merged YAML + ``--options`` first.
"""
from __future__ import annotations

from typing import Callable

from lavis.common.registry import registry
from omegaconf import DictConfig

DEFAULT_RUNNER = "runner_evlgen"


class ConfigError(ValueError):
    """A config value is missing or names nothing registered; the message starts with the key."""


def _known(kind: str) -> list[str]:
    return sorted(registry.mapping[f"{kind}_name_mapping"])


def require(section: DictConfig, key: str, prefix: str) -> object:
    """``section[key]``, or ConfigError ``"<prefix>.<key>: missing"``."""
    if section.get(key) is None:
        raise ConfigError(f"{prefix}.{key}: missing")
    return section[key]


def optional_number(section: DictConfig, key: str, prefix: str, valid: Callable[[float], bool],
                    requirement: str) -> float | None:
    """``section[key]`` as a float, None when unset; ConfigError ``"<prefix>.<key>: <requirement>, got ..."``
    when it is not a number (booleans included) or ``valid`` rejects it."""
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
        raise ConfigError(f"{prefix}.{key}: {requirement}, got {value!r}")
    return float(value)


def optional_flag(section: DictConfig, key: str, prefix: str) -> bool:
    """``section[key]`` as a bool, False when unset; ConfigError ``"<prefix>.<key>: expected true or false"``."""
    value = section.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{prefix}.{key}: expected true or false, got {value!r}")
    return value


def optional_probability(section: DictConfig, key: str, prefix: str) -> float | None:
    """``section[key]`` as a probability in [0, 1), None when unset; ConfigError naming the key otherwise."""
    return optional_number(section, key, prefix, lambda v: 0 <= v < 1, "expected a probability in [0, 1)")


def check_model(cfg: DictConfig) -> None:
    model = cfg.get("model")
    if model is None:
        raise ConfigError("model: missing section")
    arch = require(model, "arch", "model")
    model_cls = registry.get_model_class(arch)
    if model_cls is None:
        raise ConfigError(f"model.arch: unknown model '{arch}'; registered: {_known('model')}")
    model_type = require(model, "model_type", "model")
    types = sorted(getattr(model_cls, "PRETRAINED_MODEL_CONFIG_DICT", {}))
    if model_type not in types:
        raise ConfigError(f"model.model_type: unknown type '{model_type}' for model '{arch}'; known: {types}")


def check_datasets(cfg: DictConfig) -> None:
    datasets = cfg.get("datasets")
    if not datasets:
        raise ConfigError("datasets: missing section (name at least one dataset builder)")
    for name, dataset_cfg in datasets.items():
        builder = registry.get_builder_class(name)
        if builder is None:
            raise ConfigError(f"datasets.{name}: unknown dataset builder '{name}'; registered: {_known('builder')}")
        dataset_type = (dataset_cfg or {}).get("type", "default")
        types = sorted(getattr(builder, "DATASET_CONFIG_DICT", {}))
        if dataset_type not in types:
            raise ConfigError(f"datasets.{name}.type: unknown type '{dataset_type}'; known: {types}")


def check_run(cfg: DictConfig, evaluate_only: bool) -> None:
    run = cfg.get("run")
    if run is None:
        raise ConfigError("run: missing section")
    task = require(run, "task", "run")
    task_cls = registry.get_task_class(task)
    if task_cls is None:
        raise ConfigError(f"run.task: unknown task '{task}'; registered: {_known('task')}")
    if run.get("repetition_penalty") is not None and not getattr(task_cls, "READS_REPETITION_PENALTY", False):
        raise ConfigError(f"run.repetition_penalty: task '{task}' does not read it (the evlgen_captioning tasks "
                          f"do); remove the key or choose one of those tasks")
    runner_name = run.get("runner", DEFAULT_RUNNER)
    runner_cls = registry.get_runner_class(runner_name)
    if runner_cls is None:
        raise ConfigError(f"run.runner: unknown runner '{runner_name}'; registered: {_known('runner')}")
    if run.get("train_dataset_ratios") is not None and runner_name != DEFAULT_RUNNER:
        raise ConfigError(f"run.train_dataset_ratios: honoured by runner {DEFAULT_RUNNER} only; runner '{runner_name}' "
                          f"would mix the datasets by size instead: set run.runner: {DEFAULT_RUNNER} or remove the key")
    check_runner = getattr(runner_cls, "check_run_config", None)
    if check_runner is not None:
        check_runner(run, evaluate_only)


def check_config(cfg: DictConfig, evaluate_only: bool = False) -> None:
    """Raise ConfigError for the first missing or unknown model, dataset, task, runner or run key."""
    check_model(cfg)
    check_datasets(cfg)
    check_run(cfg, evaluate_only)
