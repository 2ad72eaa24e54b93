"""Caption datasets in LAVIS's annotation format that skip unreadable images instead of crashing.

Annotation format (LAVIS / BLIP): a JSON list. Training entries are one per caption,
``{"image": "rel/path.jpg", "caption": "...", "image_id": <int or str>}``; evaluation entries are
one per image, ``{"image": ..., "image_id": <int>}`` (captions live in the COCO-format ground-truth
file named by the dataset config, which pycocoevalcap reads).

A sample whose image cannot be read comes back as ``None``; :func:`collate_skipping` drops it and
reports the number dropped in the batch under ``"n_skipped"``, so the runner can count skips across
data-loader workers and report them at the end of each epoch.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

from lavis.datasets.datasets.caption_datasets import CaptionDataset, CaptionEvalDataset
from PIL import Image
from torch.utils.data.dataloader import default_collate

logger = logging.getLogger(__name__)

SKIPPED_KEY = "n_skipped"


def load_image(path: str) -> Optional[Image.Image]:
    """Open an image fully (so truncation is detected now), or return None and log why."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        logger.warning("skipping unreadable image %s: %s", path, err)
        return None


def collate_skipping(samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
    """Collate the readable samples and count the unreadable ones under ``n_skipped``."""
    kept = [s for s in samples if s is not None]
    batch: dict[str, Any] = default_collate(kept) if kept else {}
    batch[SKIPPED_KEY] = len(samples) - len(kept)
    return batch


class SafeCaptionDataset(CaptionDataset):
    """Training split: one sample per caption."""

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        ann = self.annotation[index]
        image = load_image(os.path.join(self.vis_root, ann["image"]))
        if image is None:
            return None
        return {
            "image": self.vis_processor(image),
            "text_input": self.text_processor(ann["caption"]),
            "image_id": self.img_ids[ann["image_id"]],
        }

    def collater(self, samples):
        return collate_skipping(samples)


class SafeCaptionEvalDataset(CaptionEvalDataset):
    """Evaluation split: one sample per image; ``image_id`` matches the ground-truth file."""

    gt_file: Optional[str] = None

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        ann = self.annotation[index]
        image = load_image(os.path.join(self.vis_root, ann["image"]))
        if image is None:
            return None
        return {
            "image": self.vis_processor(image),
            "image_id": ann["image_id"],
            "instance_id": ann["instance_id"],
        }

    def collater(self, samples):
        return collate_skipping(samples)
