"""COCO, Flickr30K and NoCaps captions from the public files, every path from the dataset config.

Builders: ``evlgen_coco_caption`` (Karpathy train / val / test; the train split is the pre-training
COCO data; dataset types ``eval`` and ``train`` hold only those splits), ``evlgen_flickr30k_caption``
(Karpathy test), ``evlgen_nocaps`` (val, with each image's in-domain / near-domain / out-domain label as
``dataset.domains``).

``build_info``::

    root: <folder>                     # relative paths below are under it (default: the plugin cache)
    annotations:
      <split>:
        storage: <file>
        format: karpathy | coco | lavis  # see lavis_evlgen/datasets/datasets/caption_formats.py
        split: test                    # karpathy only: which split of the file (default: <split>)
        gt: <file>                     # optional: COCO-format ground truth to use as given
    images: {storage: <folder>}        # image paths in the annotations are relative to it
    derived_dir: <folder>              # optional: where derived ground truth goes (<cache>/derived)

Evaluation splits carry ``gt_file`` (COCO format), which ``evlgen_captioning`` and its subclasses
score against: the ``gt`` file if given, the file itself for ``coco``, else a file derived from the
annotations and written once (named by its content hash). Nothing is downloaded; a missing file
raises an error naming its config key.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lavis.common.registry import registry

from lavis_evlgen.common.atomic import atomic_write_text
from lavis_evlgen.common.paths import cache_dir, config_path
from lavis_evlgen.datasets.builders.caption_folder import LocalCaptionBuilder
from lavis_evlgen.datasets.datasets.caption import SafeCaptionDataset, SafeCaptionEvalDataset
from lavis_evlgen.datasets.datasets.caption_formats import FORMATS, read_eval, read_train
from lavis_evlgen.datasets.datasets.in_memory import dataset_from_entries


def write_derived(obj: Any, folder: Path, stem: str) -> str:
    """Write ``obj`` as JSON to ``folder/<stem>-<content hash>.json`` unless already there; the path."""
    text = json.dumps(obj, sort_keys=True)
    path = folder / f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return str(path)


class CaptionBenchmarkBuilder(LocalCaptionBuilder):
    """Caption splits read from files in Karpathy, COCO or LAVIS format (see module doc)."""

    def derived_dir(self) -> Path:
        return Path(self.config.build_info.get("derived_dir") or cache_dir() / "derived")

    def build(self) -> dict:
        self.build_processors()
        info = self.config.build_info
        vis_root = self.resolve(info.get(self.data_type).storage, f"build_info.{self.data_type}.storage")
        datasets = {}
        for split, ann in info.annotations.items():
            key = f"build_info.annotations.{split}"
            path = self.resolve(ann.storage, f"{key}.storage")
            fmt = ann.get("format", "lavis")
            if fmt not in FORMATS:
                raise ValueError(f"{key}.format: unknown format '{fmt}'; expected one of {list(FORMATS)}")
            processors = "train" if split == "train" else "eval"
            try:
                if split == "train":
                    datasets[split] = dataset_from_entries(
                        SafeCaptionDataset, read_train(fmt, path), self.vis_processors[processors],
                        self.text_processors[processors], vis_root)
                    continue
                captions = read_eval(fmt, path, ann.get("split", split))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{key}: cannot read {path} as '{fmt}': {err!r}") from err
            dataset = dataset_from_entries(SafeCaptionEvalDataset, captions.entries, self.vis_processors[processors],
                                           self.text_processors[processors], vis_root)
            if ann.get("gt"):
                dataset.gt_file = self.resolve(ann.gt, f"{key}.gt")
            elif fmt == "coco":
                dataset.gt_file = path
            else:
                dataset.gt_file = write_derived(captions.gt, self.derived_dir(), f"{split}_gt")
            dataset.domains = captions.domains
            datasets[split] = dataset
        return datasets


@registry.register_builder("evlgen_coco_caption")
class COCOCaptionBuilder(CaptionBenchmarkBuilder):
    DATASET_CONFIG_DICT = {"default": config_path("datasets/evlgen_coco_caption/defaults.yaml"),
                           "eval": config_path("datasets/evlgen_coco_caption/eval.yaml"),
                           "train": config_path("datasets/evlgen_coco_caption/train.yaml")}


@registry.register_builder("evlgen_flickr30k_caption")
class Flickr30kCaptionBuilder(CaptionBenchmarkBuilder):
    DATASET_CONFIG_DICT = {"default": config_path("datasets/evlgen_flickr30k_caption/defaults.yaml")}


@registry.register_builder("evlgen_nocaps")
class NoCapsBuilder(CaptionBenchmarkBuilder):
    DATASET_CONFIG_DICT = {"default": config_path("datasets/evlgen_nocaps/defaults.yaml")}
