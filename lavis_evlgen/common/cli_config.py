"""How every command-line tool reads its experiment config: ``--cfg-path X [--options key=value ...]``.

One place for reading the YAML, applying ``--options`` (OmegaConf dot-list) and the model type's defaults,
so ``train.py``, ``evaluate.py`` and the tools accept the same arguments and fail with the same errors.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

import yaml
from lavis.common.config import Config
from lavis.common.registry import registry
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lavis_evlgen.common.config_check import ConfigError


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None,
                         help: str = "path to the experiment YAML") -> argparse.ArgumentParser:
    """Add ``--cfg-path`` (required unless a ``default`` is given) and ``--options`` to ``parser``."""
    parser.add_argument("--cfg-path", required=default is None, default=default, help=help)
    parser.add_argument("--options", nargs="+", default=[],
                        help="override config settings: key=value ... (e.g. run.max_iters=100)")
    return parser


def load_config(cfg_path: str | os.PathLike, options: Sequence[str] = ()) -> DictConfig:
    """The YAML at ``cfg_path`` with ``options`` applied (ConfigError for an unreadable file or option)."""
    if not os.path.isfile(cfg_path):
        raise ConfigError(f"--cfg-path: no such file: {cfg_path}")
    try:
        config, overrides = OmegaConf.load(cfg_path), OmegaConf.from_dotlist(list(options))
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"--cfg-path/--options: cannot read the config: {err}") from err
    if not isinstance(config, DictConfig):
        raise ConfigError(f"--cfg-path: {cfg_path} must hold a mapping (model:, datasets:, run:), "
                          f"not a {type(config).__name__}")
    try:
        return OmegaConf.merge(config, overrides)
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise ConfigError(f"--options: cannot apply them to {cfg_path}: {err}") from err


def lavis_config(cfg_path: str | os.PathLike, options: Sequence[str] = ()) -> Config:
    """LAVIS's ``Config`` of the YAML with ``options``: the run section, the model section over its type's
    defaults and each data set over its builder's defaults (ConfigError for an unreadable file or option)."""
    load_config(cfg_path, options)
    return Config(argparse.Namespace(cfg_path=str(cfg_path), options=list(options)))


def model_type_config(arch: str, model_type: str | None = None) -> DictConfig:
    """The whole default config file of a registered model's type (``model`` and ``preprocess`` sections);
    ``model_type`` None takes the model's default type."""
    model_cls = registry.get_model_class(arch)
    if model_cls is None:
        raise ConfigError(f"model.arch: unknown model '{arch}'; registered: "
                          f"{sorted(registry.mapping['model_name_mapping'])}")
    return OmegaConf.load(model_cls.default_config_path(model_type or model_cls.default_model_type()))


def model_section(section: DictConfig) -> DictConfig:
    """A ``model`` section as LAVIS's Config builds it: the type's default ``model`` keys, then the given ones."""
    return OmegaConf.merge(model_type_config(section.get("arch"), section.get("model_type")).model, section)
