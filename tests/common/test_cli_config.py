"""The command-line config reader: --cfg-path/--options, LAVIS's merged Config, a model type's defaults."""
from __future__ import annotations

import argparse

import pytest
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401  registers the models the defaults come from
from lavis_evlgen.common.cli_config import (
    add_config_arguments,
    lavis_config,
    load_config,
    model_section,
    model_type_config,
)
from lavis_evlgen.common.config_check import ConfigError


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "exp.yaml"
    OmegaConf.save({"model": {"arch": "evlgen_opt", "model_type": "tiny", "max_txt_len": 7},
                    "run": {"task": "evlgen_captioning", "max_iters": 10}, "datasets": {}}, path)
    return path


def test_options_override_the_file(experiment):
    cfg = load_config(experiment, ["run.max_iters=3", "run.seed=5"])
    assert cfg.run.max_iters == 3 and cfg.run.seed == 5 and cfg.model.max_txt_len == 7


def test_missing_file_and_bad_option_name_the_argument(tmp_path, experiment):
    with pytest.raises(ConfigError, match="--cfg-path: no such file: .*nothing.yaml"):
        load_config(tmp_path / "nothing.yaml")
    with pytest.raises(ConfigError, match="--cfg-path/--options: cannot read the config"):
        load_config(experiment, ["run.max_iters=[1,"])
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="--cfg-path/--options"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- model\n- run\n")
    with pytest.raises(ConfigError, match="--cfg-path: .*list.yaml must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="--options: cannot apply them"):
        load_config(experiment, ["run=[1,2]"])


def test_lavis_config_puts_the_file_over_the_model_type_defaults(experiment):
    cfg = lavis_config(experiment, ["run.max_iters=4"])
    defaults = model_type_config("evlgen_opt", "tiny").model
    assert cfg.model_cfg.max_txt_len == 7 and cfg.run_cfg.max_iters == 4
    assert cfg.model_cfg.vision.width == defaults.vision.width == 32
    assert cfg.args.cfg_path == str(experiment)


def test_model_type_defaults_and_unknown_model():
    assert model_type_config("evlgen_opt", "tiny").model.model_type == "tiny"
    assert "preprocess" in model_type_config("evlgen_opt", "tiny")
    merged = model_section(OmegaConf.create({"arch": "evlgen_opt", "model_type": "tiny", "prompt": "a photo of"}))
    assert merged.prompt == "a photo of" and merged.llm.tokenizer == "byte"
    with pytest.raises(ConfigError, match="model.arch: unknown model 'nope'; registered: \\["):
        model_type_config("nope")


def test_cfg_path_is_required_unless_a_default_is_given():
    with pytest.raises(SystemExit):
        add_config_arguments(argparse.ArgumentParser()).parse_args([])
    args = add_config_arguments(argparse.ArgumentParser(), default="x.yaml").parse_args(["--options", "a=1", "b=2"])
    assert args.cfg_path == "x.yaml" and args.options == ["a=1", "b=2"]
