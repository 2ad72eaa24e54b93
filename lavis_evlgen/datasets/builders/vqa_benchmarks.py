"""VQAv2, OK-VQA and GQA evaluation splits from the official files, every path from the dataset config.

Builders: ``evlgen_vqav2`` (val), ``evlgen_okvqa`` (test = OK-VQA val), ``evlgen_gqa`` (testdev balanced).

``build_info``::

    root: <folder>                     # relative paths below are under it (default: the plugin cache)
    annotations:
      <split>:                         # VQAv2 / OK-VQA
        questions: <file>              # official questions JSON
        annotations: <file>            # official annotations JSON (ten answers per question)
        image_pattern: val2014/COCO_val2014_{image_id:012d}.jpg
      <split>:                         # GQA
        storage: <file>                # official questions JSON ({qid: {imageId, question, answer}})
        image_pattern: "{image_id}.jpg"
    images: {storage: <folder>}

VQAv2 / OK-VQA splits carry ``coco_fmt_qust_file`` / ``coco_fmt_anno_file`` (the official files, which
the official VQA accuracy reads); GQA splits carry ``gt_answers`` ({question id: answer}).
"""
from __future__ import annotations

from lavis.common.registry import registry

from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.builders.caption_folder import LocalCaptionBuilder
from lavis_evlgen.datasets.datasets.in_memory import dataset_from_entries
from lavis_evlgen.datasets.datasets.vqa import SafeVQAEvalDataset
from lavis_evlgen.datasets.datasets.vqa_formats import read_gqa, read_vqa


def image_pattern(ann, key: str) -> str:
    """The split's ``image_pattern``, or ValueError naming the key."""
    if not ann.get("image_pattern"):
        raise ValueError(f"{key}.image_pattern: missing (e.g. 'val2014/COCO_val2014_{{image_id:012d}}.jpg')")
    return str(ann.image_pattern)


class VQABenchmarkBuilder(LocalCaptionBuilder):
    """Evaluation splits named by ``build_info.annotations`` (see module doc)."""

    FILE_KEYS: tuple[str, ...] = ("questions", "annotations")

    def _download_data(self) -> None:
        """Nothing to download: check that every configured file exists."""
        info = self.config.build_info
        for split, ann in info.annotations.items():
            for key in self.FILE_KEYS:
                if ann.get(key) is None:
                    raise ValueError(f"build_info.annotations.{split}.{key}: missing")
                self.resolve(ann[key], f"build_info.annotations.{split}.{key}")
        self.resolve(info.get(self.data_type).storage, f"build_info.{self.data_type}.storage")

    def read(self, split: str) -> list[dict]:
        ann = self.config.build_info.annotations[split]
        key = f"build_info.annotations.{split}"
        return read_vqa(self.resolve(ann.questions, f"{key}.questions"),
                        self.resolve(ann.annotations, f"{key}.annotations"), image_pattern(ann, key))

    def build(self) -> dict:
        self.build_processors()
        info = self.config.build_info
        vis_root = self.resolve(info.get(self.data_type).storage, f"build_info.{self.data_type}.storage")
        datasets = {}
        for split in info.annotations:
            try:
                entries = self.read(split)
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"build_info.annotations.{split}: cannot read the files: {err!r}") from err
            dataset = dataset_from_entries(SafeVQAEvalDataset, entries, self.vis_processors["eval"],
                                           self.text_processors["eval"], vis_root)
            self.attach_ground_truth(dataset, split)
            datasets[split] = dataset
        return datasets

    def attach_ground_truth(self, dataset: SafeVQAEvalDataset, split: str) -> None:
        ann = self.config.build_info.annotations[split]
        key = f"build_info.annotations.{split}"
        dataset.coco_fmt_qust_file = self.resolve(ann.questions, f"{key}.questions")
        dataset.coco_fmt_anno_file = self.resolve(ann.annotations, f"{key}.annotations")


@registry.register_builder("evlgen_vqav2")
class VQAv2Builder(VQABenchmarkBuilder):
    DATASET_CONFIG_DICT = {"default": config_path("datasets/evlgen_vqav2/defaults.yaml")}


@registry.register_builder("evlgen_okvqa")
class OKVQABuilder(VQABenchmarkBuilder):
    DATASET_CONFIG_DICT = {"default": config_path("datasets/evlgen_okvqa/defaults.yaml")}


@registry.register_builder("evlgen_gqa")
class GQABuilder(VQABenchmarkBuilder):
    FILE_KEYS = ("storage",)
    DATASET_CONFIG_DICT = {"default": config_path("datasets/evlgen_gqa/defaults.yaml")}

    def read(self, split: str) -> list[dict]:
        ann = self.config.build_info.annotations[split]
        key = f"build_info.annotations.{split}"
        return read_gqa(self.resolve(ann.storage, f"{key}.storage"), image_pattern(ann, key))

    def attach_ground_truth(self, dataset: SafeVQAEvalDataset, split: str) -> None:
        dataset.gt_answers = {e["question_id"]: e["answer"][0] for e in dataset.annotation}
