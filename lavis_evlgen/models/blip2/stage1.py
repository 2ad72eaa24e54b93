"""``blip2_stage1``: LAVIS's ``Blip2Qformer`` (BLIP-2 stage 1: ITC + ITM + ITG) built from local parts.

The training loss is LAVIS's own ``Blip2Qformer.forward``, unchanged. Only the builders differ: the
Q-Former, its tokenizer and the frozen ViT come from the ``model.qformer`` / ``model.vision`` config
sections (see ``parts``), so nothing is downloaded. Trainable: the Q-Former (with its LM head for
ITG), the queries, ``ln_vision``, ``vision_proj``, ``text_proj``, ``itm_head`` and the temperature.

One forward runs the Q-Former four times (see ``lavis_evlgen.tools.flops``): queries over the image
(ITC), the caption alone (ITC), queries + caption for ITM on three times the batch (positive pairs,
a hard-negative image per caption, a hard-negative caption per image), and the caption decoder with
the cached query states (ITG). ``generate`` captions from the Q-Former's own decoder (ITG).
"""
from __future__ import annotations

from typing import Any

import torch
from lavis.common.registry import registry
from lavis.models.blip2_models.blip2_qformer import Blip2Qformer
from omegaconf import DictConfig

from lavis_evlgen.models.blip2.parts import (
    build_frozen_vision,
    build_qformer,
    build_qformer_tokenizer,
    ensure_process_group,
    with_image_features,
)
from lavis_evlgen.models.loading import BLIP2_KEYS
from lavis_evlgen.models.model_types import PluginModelTypes


@registry.register_model("blip2_stage1")
class Blip2Stage1(PluginModelTypes, Blip2Qformer):
    """BLIP-2's first stage: LAVIS's class with offline builders (keys: lavis_evlgen/configs/models/blip2_stage1)."""

    STAGE = "BLIP-2 stage 1"
    LOSSES = ("itc", "itm", "itg")
    CONNECTOR = "Qformer.bert"
    MIN_BATCH = 2
    DEFAULT_MODEL_TYPE = "pretrain"
    KEY_MAP = BLIP2_KEYS
    TRAINABLE_PARTS = ("ln_vision", "Qformer", "query_tokens", "vision_proj", "text_proj", "itm_head", "temp")
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain": "models/blip2_stage1/pretrain.yaml",
        "pretrain_vitL": "models/blip2_stage1/pretrain_vitL.yaml",
        "embedded": "models/blip2_stage1/embedded.yaml",
        "tiny": "models/blip2_stage1/tiny.yaml",
    }

    def __init__(self, cfg: DictConfig):
        # Read by the init_* hooks below, which Blip2Qformer.__init__ calls before anything else.
        self.parts_cfg = cfg
        super().__init__(num_query_token=cfg.qformer.get("num_query_token", 32),
                         cross_attention_freq=cfg.qformer.get("cross_attention_freq", 2),
                         embed_dim=cfg.get("embed_dim", 256), max_txt_len=cfg.get("max_txt_len", 32),
                         freeze_vit=False)  # FrozenVision freezes the ViT itself

    # ------------------------------------------------------------------ Blip2Base hooks, offline
    def init_tokenizer(self):
        return build_qformer_tokenizer(self.parts_cfg.qformer)

    def init_vision_encoder(self, *unused):
        return build_frozen_vision(self.parts_cfg.vision, self.parts_cfg.get("use_features", False))

    def init_Qformer(self, num_query_token: int, vision_width: int, cross_attention_freq: int = 2):  # noqa: N802
        qformer, queries = build_qformer(self.parts_cfg.qformer, vision_width)
        # Add the [DEC] row now, initialised as on transformers 4.26 (normal); Blip2Qformer's own resize is
        # then a no-op (4.51's default mean-resizing needs real tensors, so it fails on meta skeletons).
        qformer.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        return qformer, queries

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Blip2Stage1":
        model = cls(cfg)
        model.load_checkpoint_from_config(cfg)
        return model

    # ------------------------------------------------------------------ forward
    def forward(self, samples: dict[str, Any]):
        """LAVIS's ITC + ITM + ITG loss; ``image_features`` may replace ``image``; batch of at least 2."""
        samples = with_image_features(samples)
        if samples["image"].size(0) < 2:
            raise ValueError("blip2_stage1 needs at least 2 samples per batch and process "
                             "(ITC contrasts and ITM draws negatives within the batch): raise run.batch_size_train")
        ensure_process_group(samples["image"].device)
        return super().forward(samples)

    @torch.no_grad()
    def generate(self, samples: dict[str, Any], use_nucleus_sampling: bool = False, num_beams: int = 3,
                 max_length: int = 30, min_length: int = 10, top_p: float = 0.9,
                 repetition_penalty: float = 1.0, **unused) -> list[str]:
        """Captions from the Q-Former decoder (ITG), as ``Blip2Qformer.generate`` but on transformers >= 4.27:
        the image states and queries are passed once per image and ``generate`` expands them per beam."""
        samples = with_image_features(samples)
        image = samples["image"]
        image_embeds = self.ln_vision(self.visual_encoder(image))
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        batch = image_embeds.size(0)
        input_ids = torch.full((batch, 1), self.tokenizer.bos_token_id, dtype=torch.long, device=image_embeds.device)
        outputs = self.Qformer.generate(
            input_ids=input_ids, query_embeds=self.query_tokens.expand(batch, -1, -1),
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts,
            max_length=max_length, min_length=min_length, num_beams=1 if use_nucleus_sampling else num_beams,
            do_sample=use_nucleus_sampling, top_p=top_p, repetition_penalty=repetition_penalty,
            eos_token_id=self.tokenizer.sep_token_id, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(outputs, skip_special_tokens=True)
