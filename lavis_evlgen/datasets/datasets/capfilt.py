"""BLIP's CapFilt annotations (pseudo-labelled CC3M+CC12M+SBU and LAION-115M) as a training dataset.

Format (BLIP's ``ccs_synthetic_filtered_large.json``, ``laion_synthetic_filtered_large.json``, after
the images are downloaded): a JSON list of ``{"image": path, "caption": str or [str, ...]}``; paths are
absolute or relative to the images folder. One sample per image; when an image has several captions,
one is drawn at random each time (seeded per sample by the runner's ``SeededSampleDataset``).
Unreadable images give ``None``, counted under ``n_skipped`` by :func:`collate_skipping`.
"""
from __future__ import annotations

import os
import random
from typing import Any, Callable, Optional, Sequence

from torch.utils.data import Dataset

from lavis_evlgen.datasets.datasets.caption import collate_skipping, load_image


class CapFiltDataset(Dataset):
    """Image + (randomly chosen) caption per record of a CapFilt annotation sequence."""

    def __init__(self, records: Sequence[dict[str, Any]], vis_root: str, vis_processor: Callable,
                 text_processor: Callable):
        self.records = records
        self.vis_root = vis_root
        self.vis_processor = vis_processor
        self.text_processor = text_processor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        record = self.records[index]
        image = load_image(os.path.join(self.vis_root, record["image"]))
        if image is None:
            return None
        caption = record["caption"]
        if not isinstance(caption, str):
            caption = random.choice(caption)
        return {"image": self.vis_processor(image), "text_input": self.text_processor(caption)}

    def collater(self, samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        return collate_skipping(samples)
