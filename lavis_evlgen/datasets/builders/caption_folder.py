"""``caption_folder``: any caption set stored on disk in LAVIS annotation format + COCO ground truth.

Config (``build_info``)::

    annotations:
      train: {storage: train.json}
      val:   {storage: val.json,  gt: val_gt.json}    # gt: COCO-format captions for pycocoevalcap
      test:  {storage: test.json, gt: test_gt.json}
    images: {storage: images/}

Relative paths are resolved against ``build_info.root`` if given, else the plugin cache
(``EVLGEN_CACHE``, default ``<repo>/cache``). Nothing is downloaded: missing files raise an error
naming the config key and the path tried.
"""
from __future__ import annotations

import os

from lavis.common.registry import registry
from lavis.datasets.builders.base_dataset_builder import BaseDatasetBuilder

from lavis_evlgen.common.paths import cache_dir, config_path
from lavis_evlgen.datasets.datasets.caption import SafeCaptionDataset, SafeCaptionEvalDataset


class LocalCaptionBuilder(BaseDatasetBuilder):
    """Builds train/val/test caption datasets from local files named in the config."""

    train_dataset_cls = SafeCaptionDataset
    eval_dataset_cls = SafeCaptionEvalDataset

    def _download_data(self) -> None:
        """Nothing to download: check that every configured file exists."""
        for split, info in self.config.build_info.annotations.items():
            self.resolve(info.storage, f"build_info.annotations.{split}.storage")
            if "gt" in info:
                self.resolve(info.gt, f"build_info.annotations.{split}.gt")
        self.resolve(self.config.build_info.get(self.data_type).storage,
                     f"build_info.{self.data_type}.storage")

    def resolve(self, path: str, key: str) -> str:
        """Absolute path for a config value; raises FileNotFoundError naming ``key`` if absent."""
        root = self.config.build_info.get("root") or str(cache_dir())
        full = path if os.path.isabs(path) else os.path.join(root, path)
        if not os.path.exists(full):
            raise FileNotFoundError(f"dataset file for config key '{key}' not found: {full}")
        return full

    def build(self) -> dict:
        self.build_processors()
        info = self.config.build_info
        vis_root = self.resolve(info.get(self.data_type).storage, f"build_info.{self.data_type}.storage")
        datasets = {}
        for split, ann in info.annotations.items():
            is_train = split == "train"
            key = "train" if is_train else "eval"
            cls = self.train_dataset_cls if is_train else self.eval_dataset_cls
            ds = cls(
                vis_processor=self.vis_processors[key],
                text_processor=self.text_processors[key],
                vis_root=vis_root,
                ann_paths=[self.resolve(ann.storage, f"build_info.annotations.{split}.storage")],
            )
            if "gt" in ann:
                ds.gt_file = self.resolve(ann.gt, f"build_info.annotations.{split}.gt")
            datasets[split] = ds
        return datasets


@registry.register_builder("caption_folder")
class CaptionFolderBuilder(LocalCaptionBuilder):
    DATASET_CONFIG_DICT = {"default": config_path("datasets/caption_folder/defaults.yaml")}
