"""``skimage_photos``: scikit-image's bundled photos with hand-written captions (evaluation only).

Written on first build to ``build_info.images.storage`` under ``build_info.root`` (default: the
plugin cache, so ``<cache>/data/skimage_photos``); val and test both hold every photo.
"""
from __future__ import annotations

from lavis.common.registry import registry

from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.builders.caption_folder import LocalCaptionBuilder
from lavis_evlgen.datasets.generate.from_config import data_folder
from lavis_evlgen.datasets.generate.photos import write_skimage_photos


@registry.register_builder("skimage_photos")
class SkimagePhotosBuilder(LocalCaptionBuilder):
    DATASET_CONFIG_DICT = {"default": config_path("datasets/skimage_photos/defaults.yaml")}

    def _download_data(self) -> None:
        """Write the photos and captions if absent, then check the files."""
        write_skimage_photos(data_folder(self.config.build_info, self.data_type))
        super()._download_data()
