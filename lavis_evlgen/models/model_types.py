"""What every model of the plugin shares: model types from our ``configs/`` folder, size reporting."""
from __future__ import annotations

from lavis_evlgen.common.paths import config_path


class PluginModelTypes:
    """Mixin for LAVIS models of the plugin: ``PRETRAINED_MODEL_CONFIG_DICT`` paths are under ``configs/``."""

    DEFAULT_MODEL_TYPE = ""
    PRETRAINED_MODEL_CONFIG_DICT: dict[str, str] = {}

    @classmethod
    def default_model_type(cls) -> str:
        """The type used when none is given (``lavis_evlgen.load_model_and_preprocess``)."""
        return cls.DEFAULT_MODEL_TYPE

    @classmethod
    def default_config_path(cls, model_type: str) -> str:
        if model_type not in cls.PRETRAINED_MODEL_CONFIG_DICT:
            raise ValueError(f"model.model_type: unknown type '{model_type}' for {cls.__name__}; "
                             f"known: {sorted(cls.PRETRAINED_MODEL_CONFIG_DICT)}")
        return config_path(cls.PRETRAINED_MODEL_CONFIG_DICT[model_type])

    def trainable_parameters(self) -> int:
        """Number of parameters the optimizer updates."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
