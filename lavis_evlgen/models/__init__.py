"""Models registered with LAVIS on import, and a ``load_model_and_preprocess`` with a default type."""
from __future__ import annotations

from lavis.common.registry import registry
from lavis.models import load_model_and_preprocess as _lavis_load_model_and_preprocess


def load_model_and_preprocess(name: str, model_type: str | None = None, is_eval: bool = False,
                              device: str = "cpu"):
    """LAVIS's loader, but ``model_type`` may be omitted: then the model's default type is used."""
    if model_type is None:
        model_cls = registry.get_model_class(name)
        if model_cls is None:
            raise ValueError(f"unknown model name '{name}'; "
                             f"registered: {sorted(registry.mapping['model_name_mapping'])}")
        model_type = getattr(model_cls, "default_model_type", lambda: None)()
        if not model_type:
            raise ValueError(f"model '{name}' has no default type: pass model_type explicitly")
    return _lavis_load_model_and_preprocess(name, model_type, is_eval=is_eval, device=device)


def refresh_model_zoo() -> None:
    """Add the plugin's models to ``lavis.models.model_zoo`` (LAVIS fills it once, at its own import)."""
    from lavis.models import model_zoo

    model_zoo.model_zoo = {name: list(cls.PRETRAINED_MODEL_CONFIG_DICT)
                           for name, cls in registry.mapping["model_name_mapping"].items()}


from lavis_evlgen.models import blip2, evlgen, evlgen_video  # noqa: E402,F401  (each registers its models)

refresh_model_zoo()
