"""Where the plugin's files live, and how relative paths in configs are resolved."""
from __future__ import annotations

import os
from pathlib import Path

from lavis.common.registry import registry
from omegaconf import OmegaConf

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parent
CONFIG_ROOT = REPO_ROOT / "configs"


def register_paths() -> None:
    """Tell LAVIS where our configs live, and let configs say ``${evlgen_cache:}`` (idempotent)."""
    if "evlgen_root" not in registry.mapping["paths"]:
        registry.register_path("evlgen_root", str(REPO_ROOT))
    OmegaConf.register_resolver("evlgen_cache", lambda: str(cache_dir()), replace=True)


def config_path(relative: str) -> str:
    """Absolute path of a file under the repository's ``configs/`` folder."""
    return str(CONFIG_ROOT / relative)


def cache_dir() -> Path:
    """Folder for prepared weights and generated data; ``EVLGEN_CACHE`` overrides ``<repo>/cache``."""
    return Path(os.environ.get("EVLGEN_CACHE", REPO_ROOT / "cache")).resolve()
