"""``evlgen_opt``: EVLGen with a frozen OPT decoder (the paper's main setting, OPT-2.7b)."""
from lavis.common.registry import registry

from lavis_evlgen.models.evlgen_base import EVLGenBase


@registry.register_model("evlgen_opt")
class EVLGenOPT(EVLGenBase):
    """EVLGen + transformers' OPTForCausalLM (opt-2.7b, opt-6.7b, or a tiny random OPT)."""

    LLM_ARCH = "opt"
    DEFAULT_MODEL_TYPE = "pretrain_opt2.7b"
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_opt2.7b": "models/evlgen_opt/pretrain_opt2.7b.yaml",
        "pretrain_opt6.7b": "models/evlgen_opt/pretrain_opt6.7b.yaml",
        "caption_coco_opt2.7b": "models/evlgen_opt/caption_coco_opt2.7b.yaml",
        "tiny": "models/evlgen_opt/tiny.yaml",
    }
