"""One prepared embedded cache per test session: EVLGEN_CACHE's if set, else a session temp dir."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache root the session's embedded checkpoints live under (converted at most once)."""
    if os.environ.get("EVLGEN_CACHE"):
        from lavis_evlgen.common.paths import cache_dir

        return cache_dir()
    return tmp_path_factory.mktemp("evlgen_cache")


@pytest.fixture(scope="session")
def embedded_paths(embedded_root: Path):
    from lavis_evlgen.embedded import prepare_embedded

    return prepare_embedded(embedded_root)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # EVLGEN_CACHE on another filesystem than the temp dir
        shutil.copy2(src, dst)


@pytest.fixture
def scratch_root(embedded_paths, embedded_root: Path, tmp_path: Path) -> Path:
    """A private cache root whose entries hard-link the session's, for tests that tamper with them.

    Rebuilds replace files (new inodes) rather than writing into them, so the session's entries
    stay intact; tests here only edit manifests (replaced atomically) or unlink files.
    """
    root = tmp_path / "cache"
    source = embedded_root / "embedded"
    for entry in (embedded_paths.llm_dir, embedded_paths.vision_dir, embedded_paths.bert_dir):
        shutil.copytree(source / entry.name, root / "embedded" / entry.name, copy_function=_link_or_copy)
    return root
