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
from typing import Any, Callable, Optional

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


def collate_skipping(samples: list[Optional[dict[str, Any]]],
                     collate: Callable[[list], dict[str, Any]] = default_collate) -> dict[str, Any]:
    """Collate the readable samples with ``collate`` and add the number of unreadable ones to ``n_skipped``
    (on top of any count ``collate`` reported itself)."""
    kept = [s for s in samples if s is not None]
    batch: dict[str, Any] = collate(kept) if kept else {}
    batch[SKIPPED_KEY] = int(batch.get(SKIPPED_KEY, 0)) + len(samples) - len(kept)
    return batch


class SkippingDataset:
    """One sample per annotation entry: the processed media under ``media_key`` plus :meth:`sample_fields`.

    An entry whose media cannot be read gives ``None``, which :meth:`collater` drops and counts. Mix in
    before a LAVIS dataset class (which supplies ``annotation``, ``vis_root`` and the processors).
    """

    media_key = "image"

    def load_media(self, ann: dict[str, Any]) -> Optional[Any]:
        """The processed image of ``ann``, or None if it cannot be read."""
        image = load_image(os.path.join(self.vis_root, ann["image"]))
        return None if image is None else self.vis_processor(image)

    def sample_fields(self, ann: dict[str, Any]) -> dict[str, Any]:
        """The sample's fields besides the media."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        ann = self.annotation[index]
        media = self.load_media(ann)
        if media is None:
            return None
        return {self.media_key: media, **self.sample_fields(ann)}

    def collater(self, samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        return collate_skipping(samples)


class SafeCaptionDataset(SkippingDataset, CaptionDataset):
    """Training split: one sample per caption."""

    def sample_fields(self, ann: dict[str, Any]) -> dict[str, Any]:
        return {"text_input": self.text_processor(ann["caption"]), "image_id": self.img_ids[ann["image_id"]]}


class SafeCaptionEvalDataset(SkippingDataset, CaptionEvalDataset):
    """Evaluation split: one sample per image; ``image_id`` matches the ground-truth file."""

    gt_file: Optional[str] = None

    def sample_fields(self, ann: dict[str, Any]) -> dict[str, Any]:
        return {"image_id": ann["image_id"], "instance_id": ann["instance_id"]}
