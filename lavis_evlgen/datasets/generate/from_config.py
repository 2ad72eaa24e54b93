"""Read a generator's folder and arguments from a dataset config's ``build_info``."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from lavis_evlgen.common.paths import cache_dir


def data_folder(build_info: DictConfig, data_type: str) -> Path:
    """The folder a generator writes to: ``build_info.<data_type>.storage`` under ``build_info.root``
    (default: the plugin cache), the same resolution ``LocalCaptionBuilder.resolve`` applies."""
    storage = build_info.get(data_type).storage
    return Path(build_info.get("root") or cache_dir()) / storage


def generator_kwargs(build_info: DictConfig, generator: Callable[..., Any]) -> dict[str, Any]:
    """``build_info.generate`` as keyword arguments of ``generator``; unknown keys raise ValueError."""
    node = build_info.get("generate")
    kwargs = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    accepted = set(inspect.signature(generator).parameters) - {"root"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"build_info.generate: unknown key(s) {unknown}; accepted: {sorted(accepted)}")
    return kwargs
