"""Frozen-feature cache: run the frozen ViT once per image, then train from a memory-mapped file.

The ViT is frozen and, without augmentation, sees the same pixels every epoch, so its outputs can be
computed once. ``cache_features`` writes ``features.npy`` ([images, tokens, width], float32, opened
with numpy's memmap) and ``index.json`` (image path -> row, unreadable images marked) in a folder
named by a hash of everything the features depend on; the index is written last, atomically, so a
cache is either complete or ignored. ``CachedFeaturesDataset`` then serves ``image_features``
instead of ``image``: the model skips its ViT and the loss is the same (tested).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from lavis_evlgen.common.atomic import atomic_write_text
from lavis_evlgen.datasets.datasets.caption import load_image

logger = logging.getLogger(__name__)

FEATURES = "image_features"

# Processors whose output depends only on the image (no random crops or flips).
DETERMINISTIC_PROCESSORS = ("BlipImageEvalProcessor",)


def image_paths(dataset: Dataset) -> list[str]:
    """Unique image paths of a LAVIS-style dataset, in first-seen order."""
    seen: dict[str, None] = {}
    for ann in dataset.annotation:
        seen.setdefault(os.path.join(dataset.vis_root, ann["image"]), None)
    return list(seen)


def cache_key(paths: list[str], encoder_id: str, processor: Any) -> str:
    """Hash of the image list (with sizes and mtimes), the encoder identity and the processor."""
    h = hashlib.sha256(encoder_id.encode())
    h.update(repr((type(processor).__name__, getattr(processor, "transform", None))).encode())
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def cache_features(dataset: Dataset, encode: Callable[[torch.Tensor], torch.Tensor], encoder_id: str,
                   root: Path, batch_size: int = 32, progress: bool = True) -> Path:
    """Compute (or reuse) the features of every image of ``dataset``; returns the cache folder."""
    processor = dataset.vis_processor
    if type(processor).__name__ not in DETERMINISTIC_PROCESSORS:
        raise ValueError(f"run.feature_cache: the vision processor {type(processor).__name__} is random "
                         f"(augmentation); caching needs one of {DETERMINISTIC_PROCESSORS}")
    paths = image_paths(dataset)
    folder = Path(root) / cache_key(paths, encoder_id, processor)
    if (folder / "index.json").exists():
        logger.info("feature cache hit: %s (%d images)", folder, len(paths))
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    features: Optional[np.memmap] = None
    valid = [True] * len(paths)
    bar = _progress(len(paths), f"caching ViT features ({len(paths)} images)", progress)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = [load_image(p) for p in chunk]
        for i, img in enumerate(images):
            valid[start + i] = img is not None
        pixels = [processor(img) if img is not None else None for img in images]
        template = next((p for p in pixels if p is not None), None)
        if template is None:
            bar.update(len(chunk))
            continue
        batch = torch.stack([p if p is not None else torch.zeros_like(template) for p in pixels])
        out = encode(batch).float().cpu().numpy()
        if features is None:
            features = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32,
                                                 shape=(len(paths),) + out.shape[1:])
        features[start:start + len(chunk)] = out
        bar.update(len(chunk))
    bar.close()
    if features is None:
        raise ValueError(f"run.feature_cache: no readable image among {len(paths)} in {dataset.vis_root}")
    features.flush()
    del features
    index = {"paths": paths, "valid": valid, "encoder": encoder_id}
    atomic_write_text(folder / "index.json", json.dumps(index))
    logger.info("feature cache written: %s (%d images, %d unreadable)", folder, len(paths),
                valid.count(False))
    return folder


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="img")


class CachedFeaturesDataset(Dataset):
    """A dataset (caption or VQA, any ``SkippingDataset``) whose samples carry cached ``image_features``
    instead of ``image``, with its own other fields and batching."""

    def __init__(self, dataset: Dataset, folder: Path):
        if not hasattr(dataset, "sample_fields"):
            raise TypeError(f"run.feature_cache: {type(dataset).__name__} does not give its fields apart from "
                            "its image (sample_fields), so its features cannot be cached")
        self.dataset = dataset
        index = json.loads((Path(folder) / "index.json").read_text())
        self.row = {p: i for i, p in enumerate(index["paths"])}
        self.valid = index["valid"]
        self.features = np.load(Path(folder) / "features.npy", mmap_mode="r")
        self.annotation = dataset.annotation
        self.gt_file = getattr(dataset, "gt_file", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        ann = self.dataset.annotation[index]
        row = self.row[os.path.join(self.dataset.vis_root, ann["image"])]
        if not self.valid[row]:
            return None
        return {FEATURES: torch.from_numpy(np.array(self.features[row])), **self.dataset.sample_fields(ann)}

    def collater(self, samples: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        """The wrapped dataset's batching, with the features where it expects its images."""
        media = self.dataset.media_key
        batch = self.dataset.collater([None if s is None else {(media if k == FEATURES else k): v for k, v in s.items()}
                                       for s in samples])
        if media in batch:
            batch[FEATURES] = batch.pop(media)
        return batch

    def __getattr__(self, name: str):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def apply_feature_cache(datasets: dict[str, dict[str, Dataset]], model: torch.nn.Module, encoder_id: str,
                        root: Path) -> dict[str, dict[str, Dataset]]:
    """Serve every split of every dataset from the cache (``run.feature_cache``); rank 0 computes it."""
    from lavis.common.dist_utils import is_main_process

    from lavis_evlgen.common.distributed import barrier

    def encode(images: torch.Tensor) -> torch.Tensor:
        return model.vision_features(images.to(model.device))

    cached: dict[str, dict[str, Dataset]] = {}
    for name, splits in datasets.items():
        cached[name] = {}
        for split, dataset in splits.items():
            if is_main_process():
                cache_features(dataset, encode, encoder_id, root)
            barrier()
            folder = cache_features(dataset, encode, encoder_id, root, progress=False)
            cached[name][split] = CachedFeaturesDataset(dataset, folder)
    return cached
