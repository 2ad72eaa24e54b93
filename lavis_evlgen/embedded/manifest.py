"""One prepared cache entry: built once into a temp folder, published by rename, checked by manifest.

Each entry folder holds its outputs and ``evlgen_manifest.json`` recording the converter version,
the sha256, size and mtime of every source file, and the size of every output file. The manifest
is written last inside the temp folder and the folder is renamed into place, so an interrupted
build never leaves a folder that looks complete.

Checking an entry is cheap: the recorded sha256 of a source is trusted while its size and mtime
are unchanged, and the source is re-hashed only when one of them changes (a reinstalled package
with identical bytes is then accepted and its new stat recorded). A change that keeps both size
and mtime is not noticed; ``force=True`` rebuilds regardless. Outputs are checked by size only.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from lavis_evlgen.common.atomic import atomic_write_text

logger = logging.getLogger(__name__)

MANIFEST_NAME = "evlgen_manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(path: Path, recorded: dict | None) -> dict:
    """Size, mtime and sha256 of ``path``; the hash is reused from ``recorded`` if the stat matches."""
    stat = path.stat()
    if (recorded and recorded.get("sha256") and recorded.get("size") == stat.st_size
            and recorded.get("mtime_ns") == stat.st_mtime_ns):
        sha = recorded["sha256"]
    else:
        sha = sha256_file(path)
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}


def read_manifest(entry: Path) -> dict | None:
    """The manifest of a published entry, or None if there is none or it is unreadable."""
    try:
        manifest = json.loads((entry / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _outputs_intact(entry: Path, outputs: dict) -> bool:
    for name, size in outputs.items():
        target = entry / name
        if not target.is_file() or target.stat().st_size != size:
            return False
    return True


def stale_reason(entry: Path, converter: str, sources: dict[str, Path]) -> str | None:
    """Why ``entry`` must be (re)built, or None if it was built by ``converter`` from these sources."""
    manifest = read_manifest(entry)
    if manifest is None:
        return "not prepared yet" if not entry.exists() else "no readable manifest"
    if manifest.get("converter") != converter:
        return f"converter changed ({manifest.get('converter')} -> {converter})"
    recorded = manifest.get("sources", {})
    if set(recorded) != set(sources):
        return f"source files changed ({sorted(recorded)} -> {sorted(sources)})"
    if not _outputs_intact(entry, manifest.get("outputs", {})):
        return "an output file is missing or has the wrong size"
    fresh = {key: _fingerprint(path, recorded[key]) for key, path in sources.items()}
    changed = [key for key in sources if fresh[key]["sha256"] != recorded[key].get("sha256")]
    if changed:
        return f"source sha256 changed: {changed}"
    if fresh != recorded:
        manifest["sources"] = fresh
        atomic_write_text(entry / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True))
        logger.info("%s: sources moved or touched but unchanged (same sha256); manifest updated", entry.name)
    return None


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder/.lock`` so parallel processes (e.g. DDP ranks) build each entry once."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders and safetensors writes 0600 files; a shared cache wants 0755/0644."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _sweep(entry: Path) -> None:
    """Remove temp and superseded folders that a killed build of ``entry`` left behind."""
    for pattern in (f".tmp-{entry.name}-*", f".old-{entry.name}-*"):
        for stale in entry.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def build(entry: Path, converter: str, sources: dict[str, Path], write: Callable[[Path], dict]) -> dict:
    """Run ``write(tmp_dir)`` (returns extra manifest fields), then publish ``tmp_dir`` as ``entry``.

    Call it under ``locked(entry.parent)``. On any error the temp folder is removed and an
    existing ``entry`` is left as it was.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    _sweep(entry)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
    old = entry.with_name(f".old-{entry.name}-{os.getpid()}")
    try:
        fingerprints = {key: _fingerprint(path, None) for key, path in sources.items()}
        start = time.perf_counter()
        extra = write(tmp)
        manifest = {
            "converter": converter,
            "sources": fingerprints,
            "outputs": _listing(tmp),
            "build_seconds": round(time.perf_counter() - start, 2),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }
        atomic_write_text(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True))
        _make_readable(tmp)
        if entry.exists():
            os.rename(entry, old)
        os.rename(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return manifest
