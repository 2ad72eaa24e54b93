"""Local weight files: one clear error naming the config key and the path tried, never a hub call, and
reading that runs no code from the file.

Checkpoints come from others (the EVLGen authors' release, LAVIS's BLIP-2 files) as well as from our own
runs, so they are read with ``torch.load(weights_only=True)``: tensors, containers and plain values only.
LAVIS's runner saves ``{"model", "optimizer", "config", "scaler", "epoch"}``, all of them plain; our runner
adds numpy's generator state, so numpy arrays (and nothing else beyond torch's own list) are allowed.
"""
from __future__ import annotations

import os
import pickle
from typing import Optional

import numpy as np
import torch

from lavis_evlgen.common.paths import cache_dir

# numpy's array reconstruction: what numpy.random.get_state() needs, no callable beyond building an array.
NUMPY_ARRAY_GLOBALS = (np.core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType)


class MissingWeightsError(FileNotFoundError):
    """A configured weight file or folder does not exist."""


def require_weights(path: Optional[str], key: str) -> str:
    """Return ``path`` expanded and absolute, or raise MissingWeightsError naming ``key``."""
    if path is None or str(path).strip() == "":
        raise MissingWeightsError(f"config key '{key}' is empty: set it (or its environment variable) "
                                  "to a local weights path")
    full = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.exists(full):
        hint = ""
        if full.startswith(str(cache_dir() / "embedded") + os.sep):
            hint = ("; the embedded default's weights are made by `python -m lavis_evlgen.embedded.prepare` "
                    "(the quickstart runs it)")
        raise MissingWeightsError(f"config key '{key}': no weights at '{full}'{hint}")
    return full


def read_state_dict(path: Optional[str], key: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: its ``"model"`` entry (LAVIS's and our runners') or the whole
    file when it is a bare state dict. Read with ``weights_only=True``; errors name ``key`` and the file."""
    full = require_weights(path, key)
    try:
        with torch.serialization.safe_globals(list(NUMPY_ARRAY_GLOBALS)):
            checkpoint = torch.load(full, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"config key '{key}': {full} is not a checkpoint that loads with weights_only=True "
                         f"(tensors and plain values only): {err}") from err
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"config key '{key}': {full} holds no state dict (a dict of tensors, or one under 'model')")
    return state
