"""EVLGen: frozen ViT -> ln_vision -> f_proj1 -> TomeFormer -> f_proj2 -> frozen LLM (soft prompt).

One stage, one loss: cross-entropy on the caption tokens only (visual positions, prompt and padding
are masked out). Trainable: ``ln_vision`` (as in BLIP-2), ``proj1`` (f_proj1), the TomeFormer and
``proj2`` (f_proj2). The vision encoder and the LLM are frozen and stay in eval mode whatever
``model.train()`` is called with. The LLM's family is configuration (``model.llm``, see ``llm``); the LLM
input layout, loss and ``generate`` are :class:`~lavis_evlgen.models.visual_prompt.VisualPromptLM`'s.

Registered names: ``evlgen`` (every type), and ``evlgen_opt`` / ``evlgen_vicuna``, the same class with the
model types of the paper's OPT and Vicuna settings (LAVIS looks types up by registered name).

Trainable size at paper scale (EVA-ViT-g width 1408, bert-base TomeFormer, OPT-2.7b width 2560):
the paper quotes 110M, bert-base's nominal size, but BERT's word embeddings (23.4M) and pooler
(0.6M) are never used on visual tokens, so the TomeFormer holds 85.5M and the whole trainable set
88.5M (TomeFormer 85.5M + f_proj1 1.08M + f_proj2 1.97M + ln_vision 2.8k);
``tests/models/test_model_zoo.py`` checks this count.

``model.bos_first`` is off in the paper configs and on for the embedded SmolLM2, where it cut the loss
after 100 CPU steps from about 4.0 to 2.2. ``model.target_bos``, ``model.caption_end`` and
``model.repetition_penalty`` reproduce the authors' releases (on in the model types that load their weights).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from lavis.common.registry import registry
from lavis.models.base_model import BaseModel
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import BertConfig

from lavis_evlgen.common.config_check import ConfigError, optional_flag, optional_number, optional_probability
from lavis_evlgen.models.answering import AnswerByGeneration
from lavis_evlgen.models.llm import build_llm, freeze, part_dtype
from lavis_evlgen.models.loading import EVLGEN_KEYS
from lavis_evlgen.models.model_types import PluginModelTypes, all_family_types
from lavis_evlgen.models.tomeformer import TomeFormer
from lavis_evlgen.models.vision import build_vision_encoder
from lavis_evlgen.models.visual_prompt import VisualPromptLM, layout_options
from lavis_evlgen.models.weights import require_weights

logger = logging.getLogger(__name__)

OPT_TYPES = {
    "pretrain_opt2.7b": "models/evlgen_opt/pretrain_opt2.7b.yaml",
    "pretrain_opt6.7b": "models/evlgen_opt/pretrain_opt6.7b.yaml",
    "caption_coco_opt2.7b": "models/evlgen_opt/caption_coco_opt2.7b.yaml",
    "tiny": "models/evlgen_opt/tiny.yaml",
}
VICUNA_TYPES = {
    "pretrain_vicuna7b": "models/evlgen_vicuna/pretrain_vicuna7b.yaml",
    "embedded": "models/evlgen_vicuna/embedded.yaml",
    "tiny": "models/evlgen_vicuna/tiny.yaml",
}


def build_tomeformer(cfg: DictConfig) -> TomeFormer:
    """TomeFormer from a local BERT (``model.tomeformer.bert``) or randomly from ``model.tomeformer.config``.

    ``model.tomeformer.dropout`` (optional) sets the hidden and attention dropout of every layer, replacing
    the BERT config's (0.1 for BERT and MiniLM). Off unless set (see ``TomeFormer``): ``threshold`` (number or
    per-layer list, r becomes each layer's cap), ``tokens`` (final token count instead of r), ``random_tokens``
    ([low, high] drawn per training step; needs ``tokens``, the count evaluation merges to), ``condition``
    (question-conditioned merging; needs ``bert``), ``registers`` (that many learnable never-merged tokens),
    ``mean_tokens`` (thresholds tracked in training for that mean final count; ``cap_factor`` and
    ``threshold_momentum`` tune it), ``register_init`` ("random" or "empty_text"; the latter needs ``bert``).
    """
    dropout = optional_probability(cfg, "dropout", "model.tomeformer")
    condition = optional_flag(cfg, "condition", "model.tomeformer")
    tokens, mean_tokens = cfg.get("tokens"), cfg.get("mean_tokens")
    tracking = {key: float(cfg[key]) for key in ("cap_factor", "threshold_momentum")
                if optional_number(cfg, key, "model.tomeformer", lambda v: v > 0, "expected a positive number")}
    options = dict(
        r=None if tokens is not None or mean_tokens is not None else _plain(cfg.get("r", 0)),  # list: per layer
        merge_mode=cfg.get("merge_mode", "mean"),
        proportional_attention=cfg.get("proportional_attention", False),
        threshold=_plain(cfg.get("threshold")), tokens=tokens, random_tokens=_plain(cfg.get("random_tokens")),
        condition=condition, mean_tokens=mean_tokens, registers=cfg.get("registers", 0),
        register_init=cfg.get("register_init", "random"), **tracking,
    )
    if options["random_tokens"] is not None and tokens is None:
        raise ConfigError("model.tomeformer.random_tokens needs model.tomeformer.tokens, the final count validation "
                          "and test merge to: training draws its counts with r_for_tokens' schedules, so a per-layer "
                          "r would evaluate a schedule the connector never trained on")
    if condition and not cfg.get("bert"):
        raise ConfigError("model.tomeformer.condition needs model.tomeformer.bert (its word embeddings and tokenizer)")
    try:
        if cfg.get("bert"):
            path = require_weights(cfg.bert, "model.tomeformer.bert")
            return TomeFormer.from_pretrained(path, num_hidden_layers=cfg.get("num_layers"), dropout=dropout,
                                              **options)
        settings = OmegaConf.to_container(cfg.get("config", {}), resolve=True)
        if cfg.get("num_layers"):
            settings["num_hidden_layers"] = cfg.num_layers
        if dropout is not None:
            settings["hidden_dropout_prob"] = settings["attention_probs_dropout_prob"] = dropout
        return TomeFormer.from_config(BertConfig(**settings), **options)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"model.tomeformer: {err}") from err


def _plain(value: Any) -> Any:
    """A config list as a Python list (other values unchanged)."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


@registry.register_model("evlgen")
class EVLGen(AnswerByGeneration, VisualPromptLM, PluginModelTypes, BaseModel):
    """The EVLGen model, for any LLM family (``model.llm``); see the module docstring."""

    STAGE = "EVLGen"
    LOSSES = ("caption",)
    CONNECTOR = "tomeformer"
    MIN_BATCH = 1
    KEY_MAP = EVLGEN_KEYS
    TRAINABLE_PARTS = ("ln_vision", "proj1", "tomeformer", "proj2")
    DEFAULT_MODEL_TYPE = "pretrain_opt2.7b"
    PRETRAINED_MODEL_CONFIG_DICT = all_family_types(OPT_TYPES, VICUNA_TYPES)

    def __init__(self, vision: Optional[nn.Module], vision_width: int, tomeformer: TomeFormer,
                 llm: nn.Module, tokenizer, vision_dtype: torch.dtype = torch.float32, apply_lemmatizer: bool = False,
                 **layout: Any):
        super().__init__()
        self.visual_encoder = freeze(vision) if vision is not None else None
        self.vision_dtype = vision_dtype
        self.ln_vision = nn.LayerNorm(vision_width)
        hidden = tomeformer.config.hidden_size
        self.proj1 = nn.Linear(vision_width, hidden)
        self.tomeformer = tomeformer
        self.proj2 = nn.Linear(hidden, llm.config.hidden_size)
        self.llm = freeze(llm)
        self.tokenizer = tokenizer
        self.set_layout(**layout)
        self._apply_lemmatizer = apply_lemmatizer

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "EVLGen":
        """Build from a ``model`` section (see lavis_evlgen/configs/models/*/*.yaml for the keys)."""
        vision_cfg = cfg.get("vision")
        use_features = cfg.get("use_features", False)
        vision = None if use_features else build_vision_encoder(vision_cfg)
        vision_width = vision.num_features if vision is not None else vision_cfg.width
        vision_dtype = part_dtype(vision_cfg.get("precision", "fp16"), "model.vision.precision")
        if vision is not None:
            vision = vision.to(vision_dtype)
        llm, tokenizer = build_llm(cfg.llm)
        model = cls(vision=vision, vision_width=vision_width, tomeformer=build_tomeformer(cfg.tomeformer),
                    llm=llm, tokenizer=tokenizer, vision_dtype=vision_dtype,
                    apply_lemmatizer=cfg.get("apply_lemmatizer", False), **layout_options(cfg))
        if optional_flag(cfg, "match_embedding_scale", "model"):
            model.match_embedding_scale()
        model.load_checkpoint_from_config(cfg)
        return model

    def train(self, mode: bool = True) -> "EVLGen":
        """Train the connector only; the frozen encoder and LLM stay in eval mode."""
        super().train(mode)
        if self.visual_encoder is not None:
            self.visual_encoder.eval()
        self.llm.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.proj1.weight.device

    def encode_image(self, samples: dict[str, Any], return_source: bool = False):
        """Visual soft prompt ``[B, T, D_llm]`` and its mask ``[B, T]`` (``source`` too if asked).

        Takes ``samples["image"]`` through the frozen ViT, or precomputed ViT outputs from
        ``samples["image_features"]`` ([B, N, D_vit], with an optional ``image_features_mask``).
        ``samples["condition_text"]`` (one question per image) conditions a TomeFormer built with
        ``model.tomeformer.condition``.
        """
        mask = samples.get("image_features_mask")
        if "image_features" in samples:
            feats = samples["image_features"].float()
        else:
            feats = self.vision_features(samples["image"])
        out = self.tomeformer(self.proj1(self.ln_vision(feats)), attention_mask=mask,
                              **self.tomeformer.condition_inputs(samples.get("condition_text"), feats.device))
        embeds = self.proj2(out.last_hidden_state)
        atts = out.attention_mask.long()
        return (embeds, atts, out.source) if return_source else (embeds, atts)

    @torch.no_grad()
    def vision_features(self, image: torch.Tensor) -> torch.Tensor:
        """Frozen ViT tokens ``[B, N, D_vit]`` in fp32 (the input to the feature cache)."""
        return self.visual_encoder(image.to(self.vision_dtype)).float()


@registry.register_model("evlgen_opt")
class EVLGenOPT(EVLGen):
    """EVLGen's model types with a frozen OPT (the paper's main setting, OPT-2.7b)."""

    DEFAULT_MODEL_TYPE = "pretrain_opt2.7b"
    PRETRAINED_MODEL_CONFIG_DICT = OPT_TYPES


@registry.register_model("evlgen_vicuna")
class EVLGenVicuna(EVLGen):
    """EVLGen's model types with a frozen Llama-architecture LLM (Vicuna-7b, the embedded SmolLM2)."""

    DEFAULT_MODEL_TYPE = "pretrain_vicuna7b"
    PRETRAINED_MODEL_CONFIG_DICT = VICUNA_TYPES
