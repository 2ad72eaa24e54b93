"""Where the plugin's files live, and how relative paths in configs are resolved.

The model and dataset configs ship inside the package (``lavis_evlgen/configs/``, as LAVIS ships
``lavis/configs/``), so an installed wheel finds them from any working directory. The experiment
configs (``projects/``), ``train.py`` and ``evaluate.py`` live in the repository, as LAVIS's do.

Generated data and converted weights go to the plugin cache: ``EVLGEN_CACHE`` if set, else ``<repo>/cache``
in a repository checkout, else ``~/.cache/lavis_evlgen`` (an installed wheel).
"""
from __future__ import annotations

import os
from pathlib import Path

from lavis.common.registry import registry
from omegaconf import OmegaConf

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parent
CONFIG_ROOT = PACKAGE_ROOT / "configs"


def register_paths() -> None:
    """Tell LAVIS where our configs live, and let configs say ``${evlgen_cache:}`` (idempotent)."""
    if "evlgen_root" not in registry.mapping["paths"]:
        registry.register_path("evlgen_root", str(REPO_ROOT))
    OmegaConf.register_resolver("evlgen_cache", lambda: str(cache_dir()), replace=True)


def config_path(relative: str) -> str:
    """Absolute path of a file under the package's ``configs/`` folder."""
    return str(CONFIG_ROOT / relative)


def in_repository() -> bool:
    """True when the package is imported from a checkout of the repository (not an installed wheel)."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "projects").is_dir()


def cache_dir() -> Path:
    """Folder for prepared weights and generated data (see the module doc)."""
    default = REPO_ROOT / "cache" if in_repository() else Path.home() / ".cache" / "lavis_evlgen"
    return Path(os.environ.get("EVLGEN_CACHE", default)).resolve()
