"""Video caption datasets in LAVIS's video caption format that skip unreadable or too-short videos.

Annotation format (LAVIS's msrvtt/msvd caption files): a JSON list; training entries are one per
caption, ``{"video": "rel/path.mp4", "caption": "...", "image_id": <id>}``; evaluation entries are
one per video, ``{"video": ..., "image_id": <id>}`` (the key stays ``image_id`` so COCO-format
ground truth and LAVIS's caption task work unchanged).

Frames: decord reads ``n_frms`` frames of each video, resized to ``image_size`` x ``image_size``
(both read from the LAVIS video processor, ``alpro_video_train`` / ``alpro_video_eval``), picked by
``sampling``:

* ``uniform``: the centre frame of each of ``n_frms`` equal segments (deterministic; evaluation);
* ``random``: a random frame inside each segment, in order (training; drawn from torch's RNG, so
  data-loader workers differ and a resumed run continues the same stream).

The processor's own transform then normalises (and, for ``alpro_video_train``, crops, flips and
augments) the clip, which comes out as ``[C, N, H, W]``: a batch is ``[B, C, N, H, W]``, the layout
``EVLGenVideo`` takes. LAVIS's processors are not called on the path directly because they
sample their own way (head/tail halves) and return fewer frames for short videos.

A video that cannot be decoded, or has fewer than ``n_frms`` frames, comes back as ``None`` with a
logged reason; :func:`~lavis_evlgen.datasets.datasets.caption.collate_skipping` drops it and counts it
in ``batch["n_skipped"]``, which the runner and the caption task report.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

import decord
import numpy as np
import torch
from lavis.datasets.datasets.base_dataset import BaseDataset
from lavis.datasets.datasets.caption_datasets import CaptionDataset

from lavis_evlgen.datasets.datasets.caption import SkippingDataset

logger = logging.getLogger(__name__)

FRAME_SAMPLINGS = ("uniform", "random")
MAX_FRAMES = 1024  # n_frms above this is LAVIS's "all frames" default (MAX_INT), not a clip length


def frame_indices(num_frames: int, n: int, sampling: str) -> np.ndarray:
    """``n`` increasing frame indices out of ``num_frames`` (>= n), one per equal segment."""
    bounds = np.linspace(0, num_frames, n + 1)
    if sampling == "uniform":
        return ((bounds[:-1] + bounds[1:]) / 2).astype(int)
    if sampling == "random":
        offsets = torch.rand(n, dtype=torch.float64).numpy()
        return np.minimum(bounds[:-1] + offsets * (bounds[1:] - bounds[:-1]), num_frames - 1).astype(int)
    raise ValueError(f"vis_processor.sampling: expected one of {list(FRAME_SAMPLINGS)}, got '{sampling}'")


def load_clip(path: str, n: int, image_size: int, sampling: str) -> Optional[torch.Tensor]:
    """``n`` RGB frames as a float tensor ``[C, N, H, W]`` (values 0-255), or None with a logged reason."""
    try:
        reader = decord.VideoReader(path, width=image_size, height=image_size, num_threads=1)
        length = len(reader)
        if length < n:
            logger.warning("skipping video %s: %d frame(s), fewer than the %d sampled", path, length, n)
            return None
        frames = reader.get_batch(frame_indices(length, n, sampling).tolist())
    except (decord.DECORDError, RuntimeError, OSError, ValueError) as err:
        logger.warning("skipping unreadable video %s: %s", path, str(err).splitlines()[0] if str(err) else err)
        return None
    frames = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames.asnumpy())
    return frames.permute(3, 0, 1, 2).float()  # [N, H, W, C] -> [C, N, H, W]


class VideoClipMixin(SkippingDataset):
    """Reads an annotation's video through :func:`load_clip` and the LAVIS video processor's transform."""

    media_key = "video"

    def _setup_frames(self, sampling: str) -> None:
        processor = self.vis_processor
        n = getattr(processor, "n_frms", None)
        if not hasattr(processor, "transform") or not hasattr(processor, "image_size") or not hasattr(
                processor, "n_frms"):
            raise ValueError(f"vis_processor: a video dataset needs a LAVIS video processor (alpro_video_train / "
                             f"alpro_video_eval), got {type(processor).__name__}")
        if n is None or n > MAX_FRAMES:  # LAVIS's default: all frames (MAX_INT, or None before it is registered)
            raise ValueError("vis_processor.n_frms: set the number of frames per clip (e.g. 8)")
        if sampling not in FRAME_SAMPLINGS:
            raise ValueError(f"vis_processor.sampling: expected one of {list(FRAME_SAMPLINGS)}, got '{sampling}'")
        self.n_frms, self.image_size, self.sampling = int(n), int(processor.image_size), sampling

    def load_media(self, ann: dict[str, Any]) -> Optional[torch.Tensor]:
        """The processed clip ``[C, N, H, W]`` of an annotation entry, or None if it cannot be used."""
        clip = load_clip(os.path.join(self.vis_root, ann["video"]), self.n_frms, self.image_size, self.sampling)
        return None if clip is None else self.vis_processor.transform(clip)


class SafeVideoCaptionDataset(VideoClipMixin, CaptionDataset):
    """Training split: one sample per caption, ``{"video", "text_input", "image_id"}``."""

    def __init__(self, vis_processor, text_processor, vis_root: str, ann_paths: list[str], sampling: str = "random"):
        super().__init__(vis_processor, text_processor, vis_root, ann_paths)
        self._setup_frames(sampling)

    def sample_fields(self, ann: dict[str, Any]) -> dict[str, Any]:
        return {"text_input": self.text_processor(ann["caption"]), "image_id": self.img_ids[ann["image_id"]]}


class SafeVideoCaptionEvalDataset(VideoClipMixin, BaseDataset):
    """Evaluation split: one sample per video; ``image_id`` matches the ground-truth file ``gt_file``."""

    gt_file: Optional[str] = None

    def __init__(self, vis_processor, text_processor, vis_root: str, ann_paths: list[str],
                 sampling: str = "uniform"):
        super().__init__(vis_processor, text_processor, vis_root, ann_paths)
        self._setup_frames(sampling)

    def sample_fields(self, ann: dict[str, Any]) -> dict[str, Any]:
        return {"image_id": ann["image_id"], "instance_id": ann["instance_id"]}
