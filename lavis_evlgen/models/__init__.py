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
            raise ValueError(f"unknown model name '{name}'; registered: {sorted(registry.mapping['model_name_mapping'])}")
        model_type = model_cls.default_model_type()
    return _lavis_load_model_and_preprocess(name, model_type, is_eval=is_eval, device=device)
