"""What every model of the plugin shares: model types from our ``lavis_evlgen/configs/`` folder, size reporting, and
LAVIS's checkpoint methods, reading files safely and renaming keys through the class's ``KEY_MAP``."""
from __future__ import annotations

from omegaconf import DictConfig

from lavis_evlgen.common.paths import config_path
from lavis_evlgen.models.loading import KeyMap, load_from_config, load_weights


def all_family_types(opt_types: dict[str, str], llama_types: dict[str, str]) -> dict[str, str]:
    """The model types of a class registered for every LLM family: the OPT types, then the Llama ones, whose
    ``tiny`` is listed as ``tiny_llama`` (the OPT one keeps ``tiny``)."""
    return {**opt_types, **{("tiny_llama" if k == "tiny" else k): v for k, v in llama_types.items()}}


class PluginModelTypes:
    """Mixin for LAVIS models of the plugin: ``PRETRAINED_MODEL_CONFIG_DICT`` paths are under ``lavis_evlgen/configs/``;
    ``load_checkpoint``, ``load_from_pretrained`` and ``load_checkpoint_from_config`` replace LAVIS's (which
    call ``torch.load`` on the file and load whatever fits)."""

    DEFAULT_MODEL_TYPE = ""
    PRETRAINED_MODEL_CONFIG_DICT: dict[str, str] = {}
    KEY_MAP = KeyMap()

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

    def load_checkpoint(self, url_or_filename: str, key: str = "model.finetuned") -> None:
        """Load a checkpoint of this model (ours, or a release ``KEY_MAP`` names); see :func:`load_weights`."""
        load_weights(self, url_or_filename, key, self.KEY_MAP)

    def load_from_pretrained(self, url_or_filename: str, key: str = "model.pretrained") -> None:
        """As :meth:`load_checkpoint` (LAVIS's name for loading ``model.pretrained``)."""
        load_weights(self, url_or_filename, key, self.KEY_MAP)

    def load_checkpoint_from_config(self, cfg: DictConfig, **kwargs) -> None:
        """``finetuned`` / ``pretrained`` as LAVIS chooses them (see :func:`load_from_config`)."""
        load_from_config(self, cfg, self.KEY_MAP)
