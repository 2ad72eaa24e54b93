"""Pre-training data beyond COCO: BLIP's CapFilt annotations and webdataset shards, paths from config.

The paper pre-trains on COCO + CapFilt (BLIP's pseudo-labelled CC3M+CC12M+SBU and LAION-115M).
Builders (training split only; relative paths are under ``build_info.root``, default the plugin cache):

* ``evlgen_capfilt_ccs``, ``evlgen_capfilt_laion``: CapFilt JSON lists
  (``build_info.annotations.train.storage``: a file, a glob such as ``laion/part_*.json``, or a list),
  images under ``build_info.images.storage``. The records are packed once into a memory-mapped cache
  under ``build_info.records_dir`` (default ``<cache>/records``), shared by ranks and workers.
* ``laion115M``, ``ccs14M``: webdataset shards (``build_info.shards``: brace
  patterns, one string or a list), ``build_info.num_samples`` (the nominal size, used for weighting
  by size and for the epoch length), ``build_info.shuffle_buffer``, ``build_info.seed``. At start-up
  the shards named are counted against the ``.tar`` files found in their folders, and both counts are
  logged: shards named but absent are left out with a warning (none present is an error), and ``.tar``
  files present but not named (never read) are reported with a warning too.

Nothing is downloaded.
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lavis.common.dist_utils import get_rank
from lavis.common.registry import registry

from lavis_evlgen.common.paths import cache_dir, config_path
from lavis_evlgen.datasets.builders.caption_folder import LocalCaptionBuilder
from lavis_evlgen.datasets.datasets.capfilt import CapFiltDataset
from lavis_evlgen.datasets.datasets.records import PackedRecords
from lavis_evlgen.datasets.datasets.webdataset_shards import ShardCaptionStream, expand_shards

logger = logging.getLogger(__name__)

STORAGE_KEY = "build_info.annotations.train.storage"


class CapFiltBuilder(LocalCaptionBuilder):
    """A CapFilt annotation list (one or more JSON files) as a training dataset."""

    def annotation_files(self) -> list[str]:
        storage = self.config.build_info.annotations.train.storage
        patterns = [storage] if isinstance(storage, str) else list(storage)
        root = self.config.build_info.get("root") or str(cache_dir())
        files = []
        for pattern in patterns:
            full = pattern if os.path.isabs(pattern) else os.path.join(root, pattern)
            matches = sorted(glob.glob(full)) if glob.has_magic(full) else [self.resolve(pattern, STORAGE_KEY)]
            if not matches:
                raise FileNotFoundError(f"dataset file for config key '{STORAGE_KEY}' not found: "
                                        f"no file matches {full}")
            files += matches
        return files

    def records(self) -> PackedRecords:
        records_dir = self.config.build_info.get("records_dir") or cache_dir() / "records"
        return PackedRecords.from_json_lists(self.annotation_files(), records_dir)

    def _download_data(self) -> None:
        """Check the files and pack the records (once, on the main process)."""
        self.resolve(self.config.build_info.get(self.data_type).storage, f"build_info.{self.data_type}.storage")
        self.records()

    def build(self) -> dict:
        self.build_processors()
        vis_root = self.resolve(self.config.build_info.get(self.data_type).storage,
                                f"build_info.{self.data_type}.storage")
        return {"train": CapFiltDataset(self.records(), vis_root, self.vis_processors["train"],
                                        self.text_processors["train"])}


@dataclass
class ShardInventory:
    """The shards ``build_info.shards`` names, those of them that exist, and ``.tar`` files it leaves out."""

    named: list[str]
    absent: list[str]
    unnamed: list[str]

    @property
    def present(self) -> list[str]:
        left_out = set(self.absent)
        return [p for p in self.named if p not in left_out]

    def describe(self) -> str:
        return (f"{len(self.named)} shard(s) named, {len(self.present)} found, {len(self.absent)} named but absent, "
                f"{len(self.unnamed)} .tar file(s) in the same folder(s) not named")


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("pipe:")


class ShardsBuilder(LocalCaptionBuilder):
    """Webdataset tar shards as an endless resampled training stream."""

    def shard_inventory(self) -> ShardInventory:
        """Count the named shards against the ``.tar`` files in their folders."""
        info = self.config.build_info
        if info.get("shards") is None or info.get("num_samples") is None:
            raise ValueError("build_info.shards and build_info.num_samples are required")
        root = info.get("root") or str(cache_dir())
        patterns = [info.shards] if isinstance(info.shards, str) else list(info.shards)
        named = expand_shards([p if os.path.isabs(p) or not _is_local(p) else os.path.join(root, p) for p in patterns])
        local = [p for p in named if _is_local(p)]
        absent = [p for p in local if not os.path.exists(p)]
        folders = sorted({os.path.dirname(p) for p in local})
        named_set = {os.path.normpath(p) for p in local}
        unnamed = [p for folder in folders for p in sorted(glob.glob(os.path.join(glob.escape(folder), "*.tar")))
                   if os.path.normpath(p) not in named_set]
        return ShardInventory(named, absent, unnamed)

    def shard_paths(self) -> list[str]:
        """The named shards that exist; logs the counts (once per builder), warns about absent and unnamed ones."""
        if getattr(self, "_present", None) is None:
            self._present = self._check_shards()
        return self._present

    def _check_shards(self) -> list[str]:
        inventory = self.shard_inventory()
        name = self.config.get("name") or type(self).__name__
        if inventory.absent and len(inventory.absent) == len(inventory.named):
            raise FileNotFoundError(f"dataset files for config key 'build_info.shards' not found: none of the "
                                    f"{len(inventory.named)} shards exists (first: {inventory.absent[0]})")
        logger.info("%s build_info.shards: %s", name, inventory.describe())
        if inventory.absent:
            logger.warning("%s build_info.shards: %d of %d shards are absent and left out (first: %s)", name,
                           len(inventory.absent), len(inventory.named), inventory.absent[0])
        if inventory.unnamed:
            logger.warning("%s build_info.shards: %d .tar file(s) next to the named shards are not named and will "
                           "never be read (first: %s); widen the brace range to include them", name,
                           len(inventory.unnamed), inventory.unnamed[0])
        return inventory.present

    def _download_data(self) -> None:
        self.shard_paths()

    def build(self) -> dict:
        self.build_processors()
        info = self.config.build_info
        stream = ShardCaptionStream(self.shard_paths(), num_samples=int(info.num_samples),
                                    vis_processor=self.vis_processors["train"],
                                    text_processor=self.text_processors["train"],
                                    shuffle_buffer=int(info.get("shuffle_buffer", 1000)),
                                    seed=int(info.get("seed", 42)), rank=get_rank())
        return {"train": stream}


def _defaults(name: str) -> dict[str, str]:
    return {"default": config_path(str(Path("datasets") / name / "defaults.yaml"))}


@registry.register_builder("evlgen_capfilt_ccs")
class CapFiltCCSBuilder(CapFiltBuilder):
    DATASET_CONFIG_DICT = _defaults("evlgen_capfilt_ccs")


@registry.register_builder("evlgen_capfilt_laion")
class CapFiltLaionBuilder(CapFiltBuilder):
    DATASET_CONFIG_DICT = _defaults("evlgen_capfilt_laion")


@registry.register_builder("laion115M")
class Laion115mShardsBuilder(ShardsBuilder):
    DATASET_CONFIG_DICT = _defaults("laion115M")


@registry.register_builder("ccs14M")
class CCS14mShardsBuilder(ShardsBuilder):
    DATASET_CONFIG_DICT = _defaults("ccs14M")
