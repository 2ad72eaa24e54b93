"""Cache entries: atomic publish, manifest checks, stale reasons (small files, no models)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lavis_evlgen.embedded.manifest import MANIFEST_NAME, build, read_manifest, sha256_file, stale_reason


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "weights.bin"
    path.parent.mkdir()
    path.write_bytes(b"weights v1")
    return path


def _write_ok(out: Path) -> dict:
    (out / "model.bin").write_bytes(b"converted")
    (out / "sub").mkdir()
    (out / "sub" / "extra.txt").write_text("x")
    return {"note": "ok"}


def test_build_publishes_outputs_and_manifest(tmp_path: Path, source: Path):
    entry = tmp_path / "cache" / "part"
    manifest = build(entry, "conv/1", {"weights.bin": source}, _write_ok)
    assert (entry / "model.bin").read_bytes() == b"converted"
    assert read_manifest(entry) == manifest
    assert manifest["outputs"] == {"model.bin": 9, "sub/extra.txt": 1}
    assert manifest["sources"]["weights.bin"]["sha256"] == sha256_file(source)
    assert manifest["note"] == "ok"
    assert stale_reason(entry, "conv/1", {"weights.bin": source}) is None
    assert sorted(p.name for p in entry.parent.iterdir()) == ["part"]
    assert oct((entry / "model.bin").stat().st_mode & 0o777) == oct(0o644)


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path: Path, source: Path):
    entry = tmp_path / "cache" / "part"

    def write_then_fail(out: Path) -> dict:
        (out / "model.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(entry, "conv/1", {"weights.bin": source}, write_then_fail)
    assert list(entry.parent.iterdir()) == []
    assert stale_reason(entry, "conv/1", {"weights.bin": source}) == "not prepared yet"


def test_failed_rebuild_keeps_the_previous_entry(tmp_path: Path, source: Path):
    entry = tmp_path / "cache" / "part"
    build(entry, "conv/1", {"weights.bin": source}, _write_ok)

    def fail(out: Path) -> dict:
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        build(entry, "conv/2", {"weights.bin": source}, fail)
    assert read_manifest(entry)["converter"] == "conv/1"
    assert stale_reason(entry, "conv/1", {"weights.bin": source}) is None


def test_leftovers_of_a_killed_build_are_swept(tmp_path: Path, source: Path):
    entry = tmp_path / "cache" / "part"
    (tmp_path / "cache" / ".tmp-part-abc").mkdir(parents=True)
    (tmp_path / "cache" / ".tmp-part-abc" / "model.bin").write_bytes(b"half")
    build(entry, "conv/1", {"weights.bin": source}, _write_ok)
    assert sorted(p.name for p in entry.parent.iterdir()) == ["part"]


def test_stale_reasons(tmp_path: Path, source: Path):
    entry = tmp_path / "cache" / "part"
    sources = {"weights.bin": source}
    build(entry, "conv/1", sources, _write_ok)
    assert stale_reason(entry, "conv/2", sources).startswith("converter changed")
    assert stale_reason(entry, "conv/1", {"other.bin": source}).startswith("source files changed")

    source.write_bytes(b"weights v2")
    assert stale_reason(entry, "conv/1", sources) == "source sha256 changed: ['weights.bin']"
    source.write_bytes(b"weights v1")

    (entry / "sub" / "extra.txt").write_text("longer")
    assert stale_reason(entry, "conv/1", sources) == "an output file is missing or has the wrong size"
    (entry / MANIFEST_NAME).write_text("{ truncated")
    assert stale_reason(entry, "conv/1", sources) == "no readable manifest"


def test_touched_source_with_same_bytes_is_accepted_and_recorded(tmp_path: Path, source: Path):
    entry = tmp_path / "cache" / "part"
    sources = {"weights.bin": source}
    build(entry, "conv/1", sources, _write_ok)
    model_mtime = (entry / "model.bin").stat().st_mtime_ns
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    assert stale_reason(entry, "conv/1", sources) is None
    recorded = json.loads((entry / MANIFEST_NAME).read_text())["sources"]["weights.bin"]
    assert recorded["mtime_ns"] == source.stat().st_mtime_ns
    assert (entry / "model.bin").stat().st_mtime_ns == model_mtime
