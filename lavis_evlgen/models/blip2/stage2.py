"""BLIP-2 stage 2 (Q-Former -> projection -> frozen LLM, one captioning loss) from local parts.

``blip2_stage2`` subclasses LAVIS's ``Blip2OPT`` for any LLM family (``model.llm``, see ``llm``);
``blip2_stage2_opt`` and ``blip2_stage2_llama`` are the same class with the model types of an OPT and a
Llama-architecture decoder (LAVIS 1.0.2 has no Vicuna BLIP-2). ``Blip2OPT.__init__`` itself cannot run
here: it downloads bert-base-uncased and the OPT from the hub and uses LAVIS's own OPT copy, whose
``generate`` breaks from transformers 4.27 (queries expanded per beam twice) and is gone from 4.52. So
``__init__`` builds the same attributes from local parts (``Qformer``, ``query_tokens``, ``ln_vision``,
``visual_encoder``, ``opt_model`` = the frozen LLM through ``build_llm``, ``opt_tokenizer``, ``opt_proj``)
with the same Q-Former pruning (no LM head, word or position embeddings, or text FFNs), so LAVIS's BLIP-2
OPT checkpoints fit.

The LLM input layout, loss and ``generate`` are EVLGen's
(:class:`~lavis_evlgen.models.visual_prompt.VisualPromptLM`), so both baselines take the same options
(``model.bos_first``, ``model.match_embedding_scale``, ...). With ``model.target_bos: true`` (set in the
shipped types) the loss equals LAVIS's ``Blip2OPT.forward``, given captions without the prompt: the model
prepends ``model.prompt`` itself, where LAVIS expects the text processor to have done so.

The Q-Former comes from ``model.stage1_checkpoint`` (a ``blip2_stage1`` run) or, if that is null,
starts where stage 1 would (BERT weights where configured, random cross-attention and queries):
"BLIP-2 without stage 1". Unlike LAVIS, the frozen LLM stays in eval mode while training (no
dropout in frozen parts), as in EVLGen.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Optional

import torch
from lavis.common.registry import registry
from lavis.models.blip2_models.blip2_opt import Blip2OPT
from lavis.models.blip2_models.Qformer import BertLMHeadModel
from omegaconf import DictConfig
from torch import nn

from lavis_evlgen.common.config_check import optional_flag
from lavis_evlgen.models.answering import AnswerByGeneration
from lavis_evlgen.models.blip2.parts import (
    build_frozen_vision,
    build_qformer,
    copy_text_ffn_to_queries,
    with_image_features,
)
from lavis_evlgen.models.blip2.weights import load_stage1
from lavis_evlgen.models.llm import build_llm, freeze
from lavis_evlgen.models.loading import BLIP2_KEYS
from lavis_evlgen.models.model_types import PluginModelTypes, all_family_types
from lavis_evlgen.models.visual_prompt import VisualPromptLM, layout_options


def drop_text_path(qformer: BertLMHeadModel) -> None:
    """Remove what stage 2 never runs (LM head, word/position embeddings, text FFNs), as Blip2OPT does."""
    qformer.cls = None
    qformer.bert.embeddings.word_embeddings = None
    qformer.bert.embeddings.position_embeddings = None
    for layer in qformer.bert.encoder.layer:
        layer.output = None
        layer.intermediate = None


OPT_TYPES = {
    "pretrain_opt2.7b": "models/blip2_stage2_opt/pretrain_opt2.7b.yaml",
    "tiny": "models/blip2_stage2_opt/tiny.yaml",
}
LLAMA_TYPES = {
    "embedded": "models/blip2_stage2_llama/embedded.yaml",
    "tiny": "models/blip2_stage2_llama/tiny.yaml",
}


@registry.register_model("blip2_stage2")
class Blip2Stage2(AnswerByGeneration, VisualPromptLM, PluginModelTypes, Blip2OPT):
    """BLIP-2 stage 2 for any LLM family (config keys: see lavis_evlgen/configs/models/blip2_stage2_*)."""

    STAGE = "BLIP-2 stage 2"
    LOSSES = ("caption",)
    CONNECTOR = "Qformer.bert"
    MIN_BATCH = 1
    KEY_MAP = BLIP2_KEYS
    TRAINABLE_PARTS = ("ln_vision", "Qformer", "query_tokens", "opt_proj")
    PROJECTION = "opt_proj"
    DEFAULT_MODEL_TYPE = "pretrain_opt2.7b"
    PRETRAINED_MODEL_CONFIG_DICT = all_family_types(OPT_TYPES, LLAMA_TYPES)

    def __init__(self, cfg: DictConfig):
        super(Blip2OPT, self).__init__()  # Blip2Base: Blip2OPT.__init__ downloads (see module doc)
        self.visual_encoder, self.ln_vision = build_frozen_vision(cfg.vision, cfg.get("use_features", False))
        self.Qformer, self.query_tokens = build_qformer(cfg.qformer, self.visual_encoder.num_features)
        copy_text_ffn_to_queries(self.Qformer)
        drop_text_path(self.Qformer)
        llm, self.opt_tokenizer = build_llm(cfg.llm)
        self.opt_model = freeze(llm)
        self.opt_proj = nn.Linear(self.Qformer.config.hidden_size, self.opt_model.config.hidden_size)
        self.set_layout(**layout_options(cfg))
        self._apply_lemmatizer = cfg.get("apply_lemmatizer", False)

    @property
    def llm(self) -> nn.Module:
        """The frozen LLM (LAVIS's name: ``opt_model``)."""
        return self.opt_model

    @property
    def tokenizer(self):
        """The LLM's tokenizer (LAVIS's name: ``opt_tokenizer``)."""
        return self.opt_tokenizer

    @property
    def eos_token_id(self) -> int:
        """The token ending captions (LAVIS's name for ``end_token_id``)."""
        return self.end_token_id

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Blip2Stage2":
        """Build from a ``model`` section; ``stage1_checkpoint``, then ``finetuned``/``pretrained`` (LAVIS's rule)."""
        model = cls(cfg)
        if optional_flag(cfg, "match_embedding_scale", "model"):
            model.match_embedding_scale()
        if cfg.get("stage1_checkpoint"):
            load_stage1(model, cfg.stage1_checkpoint)
        model.load_checkpoint_from_config(cfg)
        return model

    def train(self, mode: bool = True) -> "Blip2Stage2":
        """Train the Q-Former side; the frozen ViT and LLM stay in eval mode."""
        super().train(mode)
        self.opt_model.eval()
        return self

    def maybe_autocast(self, dtype: Optional[torch.dtype] = None) -> ContextManager:
        """Autocast to the LLM's half precision on a GPU (LAVIS always picks fp16); nothing on CPU or in fp32."""
        llm_dtype = self.opt_model.get_input_embeddings().weight.dtype
        if self.device.type != "cuda" or llm_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype or llm_dtype)

    def encode_image(self, samples: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The visual soft prompt ``[B, num_query_token, D_llm]`` and its mask, from ``image`` or ``image_features``."""
        image = with_image_features(samples)["image"]
        image_embeds = self.ln_vision(self.visual_encoder(image))
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        query_output = self.Qformer.bert(query_embeds=self.query_tokens.expand(image_embeds.size(0), -1, -1),
                                         encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts,
                                         return_dict=True)
        embeds = self.opt_proj(query_output.last_hidden_state)
        return embeds, torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)


@registry.register_model("blip2_stage2_opt")
class Blip2Stage2OPT(Blip2Stage2):
    """BLIP-2 stage 2's model types with transformers' OPT (the paper's baseline, OPT-2.7b)."""

    DEFAULT_MODEL_TYPE = "pretrain_opt2.7b"
    PRETRAINED_MODEL_CONFIG_DICT = OPT_TYPES


@registry.register_model("blip2_stage2_llama")
class Blip2Stage2Llama(Blip2Stage2):
    """BLIP-2 stage 2's model types with a Llama-architecture LLM (SmolLM2 in the embedded default)."""

    DEFAULT_MODEL_TYPE = "embedded"
    PRETRAINED_MODEL_CONFIG_DICT = LLAMA_TYPES
