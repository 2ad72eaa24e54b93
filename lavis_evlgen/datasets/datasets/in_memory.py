"""Build LAVIS datasets from annotation entries already in memory (read from the public formats)."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from lavis.datasets.datasets.base_dataset import BaseDataset
from lavis.datasets.datasets.caption_datasets import CaptionDataset

D = TypeVar("D", bound=BaseDataset)


def dataset_from_entries(cls: type[D], entries: list[dict[str, Any]], vis_processor: Callable,
                         text_processor: Callable, vis_root: str) -> D:
    """A LAVIS dataset of class ``cls`` over ``entries`` (instance ids added, caption image ids indexed)."""
    dataset = cls(vis_processor=vis_processor, text_processor=text_processor, vis_root=vis_root, ann_paths=[])
    dataset.annotation = entries
    dataset._add_instance_ids()
    if isinstance(dataset, CaptionDataset):
        dataset.img_ids = {image_id: n for n, image_id in enumerate(dict.fromkeys(e["image_id"] for e in entries))}
    return dataset
