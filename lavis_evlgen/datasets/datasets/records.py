"""Annotation records packed into one byte array, memory-mapped from a cache folder.

A list of 10^7-10^8 Python dicts (CapFilt's LAION-115M and CC+SBU annotations) costs tens of GB per
process, and data-loader workers copy it page by page as reference counts change. Here the records
are JSON-encoded back to back in ``records.bin`` with their start offsets in ``offsets.npy``; every
rank and worker maps the same two files, so the memory is shared and paid once. The cache is keyed
by the source files' paths, sizes and modification times, and written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from lavis_evlgen.common.atomic import atomic_write

BLOB = "records.bin"
OFFSETS = "offsets.npy"


def _source_key(paths: Sequence[str]) -> str:
    parts = [f"{os.path.abspath(p)}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p in paths]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:20]


def _iter_json_lists(paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of annotation records")
        yield from data


class PackedRecords(Sequence):
    """Read-only sequence of dicts backed by a byte blob and an offset array."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob = blob
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return json.loads(self.blob[start:end].tobytes())

    @classmethod
    def from_json_lists(cls, paths: Sequence[str], cache_root: str | os.PathLike) -> "PackedRecords":
        """Records of the JSON list files ``paths``, packed once into ``cache_root/<key>/`` and mapped."""
        folder = Path(cache_root) / _source_key(paths)
        if not (folder / OFFSETS).exists():
            folder.mkdir(parents=True, exist_ok=True)
            offsets = array("q", [0])

            def write_blob(f) -> None:
                for record in _iter_json_lists(paths):
                    data = json.dumps(record, separators=(",", ":")).encode()
                    f.write(data)
                    offsets.append(offsets[-1] + len(data))

            atomic_write(folder / BLOB, write_blob)
            atomic_write(folder / OFFSETS, lambda f: np.save(f, np.frombuffer(offsets, dtype=np.int64)))
        offsets = np.load(folder / OFFSETS, mmap_mode="r")
        blob = (np.memmap(folder / BLOB, dtype=np.uint8, mode="r") if offsets[-1] > 0
                else np.zeros(0, dtype=np.uint8))
        return cls(blob, offsets)
