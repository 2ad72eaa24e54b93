"""Local weight paths: one clear error naming the config key and the path tried, never a hub call."""
from __future__ import annotations

import os
from typing import Optional


class MissingWeightsError(FileNotFoundError):
    """A configured weight file or folder does not exist."""


def require_weights(path: Optional[str], key: str) -> str:
    """Return ``path`` expanded and absolute, or raise MissingWeightsError naming ``key``."""
    if path is None or str(path).strip() == "":
        raise MissingWeightsError(f"config key '{key}' is empty: set it (or its environment variable) "
                                  "to a local weights path")
    full = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.exists(full):
        raise MissingWeightsError(f"config key '{key}': no weights at '{full}'")
    return full
