"""The embedded default's real pretrained weights (SmolLM2-135M, DINOv2 ViT-S/14, all-MiniLM-L6-v2).

``prepare_embedded()`` converts them once into ``cache_dir()/embedded/`` and returns their folders;
``LICENCES`` names each part's package, licence and upstream. ``prepare_embedded`` and
``EmbeddedPaths`` are loaded on first use, so ``python -m lavis_evlgen.embedded.prepare`` runs the
module once (not imported twice) and importing the package stays light.
"""
from __future__ import annotations

from typing import Any

from lavis_evlgen.embedded.sources import LICENCES, EmbeddedSourceMissing, Licence

__all__ = ["EmbeddedPaths", "EmbeddedSourceMissing", "LICENCES", "Licence", "prepare_embedded"]


def __getattr__(name: str) -> Any:
    if name in ("prepare_embedded", "EmbeddedPaths"):
        from lavis_evlgen.embedded import prepare

        return getattr(prepare, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
