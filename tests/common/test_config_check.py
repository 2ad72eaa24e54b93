"""Config mistakes are reported as one ConfigError naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.config_check import ConfigError, check_config
from tests.runners.tiny_run import experiment


def config(**run):
    return OmegaConf.create(experiment(Path("/data"), Path("/out"), **run))


def test_valid_config_passes():
    check_config(config())


@pytest.mark.parametrize("path, value, message", [
    ("model.arch", "foo", "model.arch: unknown model 'foo'; registered: ["),
    ("model.model_type", "huge", "model.model_type: unknown type 'huge' for model 'evlgen_opt'"),
    ("run.task", "nope", "run.task: unknown task 'nope'"),
    ("run.runner", "nope", "run.runner: unknown runner 'nope'"),
    ("run.lr_sched", "nope", "run.lr_sched: unknown scheduler 'nope'"),
    ("run.on_nonfinite_loss", "ignore", "run.on_nonfinite_loss: expected one of"),
    ("run.amp_dtype", "fp8", "run.amp_dtype: expected one of"),
    ("run.max_iters", -3, "run.max_iters: must be an integer >= 1"),
    ("run.keep_last_k", -1, "run.keep_last_k: must be an integer >= 0"),
    ("run.max_grad_norm", -1.0, "run.max_grad_norm: must be a positive number"),
])
def test_bad_value_names_the_key(path, value, message):
    cfg = config()
    OmegaConf.update(cfg, path, value)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("key", ["batch_size_train", "init_lr", "lr_sched", "output_dir", "task", "train_splits"])
def test_missing_run_key_is_named(key):
    cfg = config()
    del cfg.run[key]
    with pytest.raises(ConfigError, match=f"^run.{key}: missing"):
        check_config(cfg)


def test_missing_schedule_length_is_named():
    cfg = config()
    del cfg.run["max_iters"]
    with pytest.raises(ConfigError, match="^run.max_iters: missing"):
        check_config(cfg)
    cfg.run.max_epoch = 2
    check_config(cfg)


def test_unknown_dataset_builder_is_named():
    cfg = config()
    cfg.datasets = {"no_such_set": {}}
    with pytest.raises(ConfigError, match="^datasets.no_such_set: unknown dataset builder 'no_such_set'"):
        check_config(cfg)


def test_evaluation_only_needs_no_training_keys():
    cfg = config()
    for key in ("batch_size_train", "init_lr", "lr_sched", "train_splits", "max_iters"):
        del cfg.run[key]
    check_config(cfg, evaluate_only=True)
    del cfg.run["batch_size_eval"]
    with pytest.raises(ConfigError, match="^run.batch_size_eval: missing"):
        check_config(cfg, evaluate_only=True)
