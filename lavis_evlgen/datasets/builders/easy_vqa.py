"""``easy_vqa``: easy-VQA questions as LAVIS VQA datasets, scored by LAVIS's ``VQATask`` unchanged.

Prepared on first build in ``build_info.images.storage`` under ``build_info.root`` (default: the
plugin cache, so ``<cache>/data/easy_vqa``) with the arguments in ``build_info.generate``
(``seed``, ``n_train``, ``n_val``, ``n_test``, ``val_images``). Evaluation splits name their VQAv2
files under ``vqa_questions`` / ``vqa_annotations``; ``build_info.answer_list.storage`` names the
answer list.
"""
from __future__ import annotations

import json

from lavis.common.registry import registry

from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.builders.caption_folder import LocalCaptionBuilder
from lavis_evlgen.datasets.datasets.vqa import SafeVQADataset, SafeVQAEvalDataset
from lavis_evlgen.datasets.generate.easy_vqa import prepare_easy_vqa
from lavis_evlgen.datasets.generate.from_config import data_folder, generator_kwargs

VQA_FILE_KEYS = {"vqa_questions": "coco_fmt_qust_file", "vqa_annotations": "coco_fmt_anno_file"}


@registry.register_builder("easy_vqa")
class EasyVQABuilder(LocalCaptionBuilder):
    train_dataset_cls = SafeVQADataset
    eval_dataset_cls = SafeVQAEvalDataset
    DATASET_CONFIG_DICT = {"default": config_path("datasets/easy_vqa/defaults.yaml")}

    def _download_data(self) -> None:
        """Prepare the splits if absent or made with other arguments, then check every named file."""
        info = self.config.build_info
        prepare_easy_vqa(data_folder(info, self.data_type), **generator_kwargs(info, prepare_easy_vqa))
        super()._download_data()
        for split, ann in info.annotations.items():
            for key in VQA_FILE_KEYS:
                if key in ann:
                    self.resolve(ann[key], f"build_info.annotations.{split}.{key}")
        self.resolve(info.answer_list.storage, "build_info.answer_list.storage")

    def build(self) -> dict:
        """LAVIS VQA datasets; evaluation splits carry the VQAv2 files and the answer list."""
        datasets = super().build()
        info = self.config.build_info
        with open(self.resolve(info.answer_list.storage, "build_info.answer_list.storage")) as f:
            answer_list = json.load(f)
        for split, ds in datasets.items():
            if split == "train":
                continue
            ann = info.annotations[split]
            for key, attribute in VQA_FILE_KEYS.items():
                if key in ann:
                    setattr(ds, attribute, self.resolve(ann[key], f"build_info.annotations.{split}.{key}"))
            ds.answer_list = answer_list
        return datasets
