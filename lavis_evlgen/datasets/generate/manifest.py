"""Idempotent generation: a folder is current when its manifest records the same arguments.

The manifest is written last, so an interrupted generation leaves no manifest and is redone.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def is_current(root: Path, args: dict[str, Any]) -> bool:
    """True if ``root`` holds a finished generation made with exactly ``args``."""
    path = root / MANIFEST
    if not path.is_file():
        return False
    return json.loads(path.read_text()) == args


def clear(root: Path, names: list[str]) -> None:
    """Remove the manifest and the listed files / folders of a previous generation under ``root``."""
    for name in [MANIFEST, *names]:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def write_manifest(root: Path, args: dict[str, Any]) -> None:
    """Mark ``root`` as generated with ``args`` (call after every other file is written)."""
    (root / MANIFEST).write_text(json.dumps(args, indent=1, sort_keys=True) + "\n")
