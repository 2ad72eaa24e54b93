"""Shared fixtures: tiny generated sets in temporary folders, and dataset configs pointing at them."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401  (registers the builders)
from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.generate.shapes_caption import generate_shapes_caption

TINY_SHAPES = {"seed": 0, "n_train": 60, "n_val": 6, "n_test": 12, "image_size": 96}


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A tiny shapes set shared by read-only tests."""
    return generate_shapes_caption(tmp_path_factory.mktemp("shapes"), **TINY_SHAPES)


@pytest.fixture
def dataset_config():
    """Factory: the default config of a builder with ``build_info.root`` and generation arguments overridden."""

    def make(name: str, root: Path, **generate):
        cfg = OmegaConf.load(config_path(f"datasets/{name}/defaults.yaml")).datasets[name]
        cfg.build_info.root = str(root)
        for key, value in generate.items():
            cfg.build_info.generate[key] = value
        return cfg

    return make
