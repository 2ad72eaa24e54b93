"""``evlgen_vicuna``: EVLGen with a frozen Llama-architecture decoder (Vicuna-7b, SmolLM2, ...)."""
from lavis.common.registry import registry

from lavis_evlgen.models.evlgen_base import EVLGenBase


@registry.register_model("evlgen_vicuna")
class EVLGenVicuna(EVLGenBase):
    """EVLGen + transformers' LlamaForCausalLM (vicuna-7b or any Llama-architecture checkpoint)."""

    LLM_ARCH = "llama"
    DEFAULT_MODEL_TYPE = "pretrain_vicuna7b"
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_vicuna7b": "models/evlgen_vicuna/pretrain_vicuna7b.yaml",
        "embedded": "models/evlgen_vicuna/embedded.yaml",
        "tiny": "models/evlgen_vicuna/tiny.yaml",
    }
