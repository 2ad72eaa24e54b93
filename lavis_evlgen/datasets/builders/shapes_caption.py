"""``shapes_caption``: the generated shapes caption set, generated on first build.

The set is written to ``build_info.images.storage`` under ``build_info.root`` (default: the plugin
cache, so ``<cache>/data/shapes``) with the arguments in ``build_info.generate`` (``seed``,
``n_train``, ``n_val``, ``n_test``, ``image_size``); an existing set made with the same arguments is
reused, one made with other arguments is replaced.
"""
from __future__ import annotations

from lavis.common.registry import registry

from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.builders.caption_folder import LocalCaptionBuilder
from lavis_evlgen.datasets.generate.from_config import data_folder, generator_kwargs
from lavis_evlgen.datasets.generate.shapes_caption import generate_shapes_caption


@registry.register_builder("shapes_caption")
class ShapesCaptionBuilder(LocalCaptionBuilder):
    DATASET_CONFIG_DICT = {"default": config_path("datasets/shapes_caption/defaults.yaml")}

    def _download_data(self) -> None:
        """Generate the set if it is absent or was made with other arguments, then check the files."""
        info = self.config.build_info
        generate_shapes_caption(data_folder(info, self.data_type), **generator_kwargs(info, generate_shapes_caption))
        super()._download_data()
