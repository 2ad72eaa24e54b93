"""BLIP-2 stage 2 (Q-Former -> projection -> frozen LLM, one captioning loss) from local parts.

``blip2_stage2_opt`` subclasses LAVIS's ``Blip2OPT`` and trains with its ``forward`` unchanged.
``Blip2OPT.__init__`` itself cannot run here: it downloads bert-base-uncased and the OPT from the hub
and uses LAVIS's own OPT copy, whose ``generate`` breaks from transformers 4.27 (queries expanded per
beam twice) and is gone from 4.52. So ``__init__`` builds the same attributes from local parts
(``Qformer``, ``query_tokens``, ``ln_vision``, ``visual_encoder``, ``opt_model`` = transformers'
OPTForCausalLM or LlamaForCausalLM through ``build_llm``, ``opt_tokenizer``, ``opt_proj``,
``prompt_length``, ``eos_token_id``) with the same Q-Former pruning (no LM head, word or position
embeddings, or text FFNs), so LAVIS's BLIP-2 OPT checkpoints fit. ``generate`` passes the visual
prompt as ``inputs_embeds`` to transformers' ``generate``.

``blip2_stage2_llama`` is the same model with a Llama-architecture decoder (LAVIS 1.0.2 has no
Vicuna BLIP-2); its ``forward`` is ``Blip2OPT.forward`` with the decoder's input embeddings looked up
through ``get_input_embeddings()`` (tested equal to LAVIS's on the OPT variant).

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

from lavis_evlgen.models.blip2.parts import (build_frozen_vision, build_qformer, copy_text_ffn_to_queries,
                                             with_image_features)
from lavis_evlgen.models.answering import AnswerByGeneration
from lavis_evlgen.models.blip2.weights import load_stage1
from lavis_evlgen.models.loading import BLIP2_KEYS
from lavis_evlgen.models.model_types import PluginModelTypes
from lavis_evlgen.models.caption_loss import caption_loss
from lavis_evlgen.models.llm import build_llm, freeze


def drop_text_path(qformer: BertLMHeadModel) -> None:
    """Remove what stage 2 never runs (LM head, word/position embeddings, text FFNs), as Blip2OPT does."""
    qformer.cls = None
    qformer.bert.embeddings.word_embeddings = None
    qformer.bert.embeddings.position_embeddings = None
    for layer in qformer.bert.encoder.layer:
        layer.output = None
        layer.intermediate = None


@registry.register_model("blip2_stage2_opt")
class Blip2Stage2OPT(AnswerByGeneration, PluginModelTypes, Blip2OPT):
    """BLIP-2 stage 2 with transformers' OPT (config keys: see lavis_evlgen/configs/models/blip2_stage2_opt)."""

    STAGE = "BLIP-2 stage 2"
    LOSSES = ("caption",)
    CONNECTOR = "Qformer.bert"
    MIN_BATCH = 1
    LLM_ARCH = "opt"
    KEY_MAP = BLIP2_KEYS
    DEFAULT_MODEL_TYPE = "pretrain_opt2.7b"
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_opt2.7b": "models/blip2_stage2_opt/pretrain_opt2.7b.yaml",
        "tiny": "models/blip2_stage2_opt/tiny.yaml",
    }

    def __init__(self, cfg: DictConfig):
        super(Blip2OPT, self).__init__()  # Blip2Base: Blip2OPT.__init__ downloads (see module doc)
        self.visual_encoder, self.ln_vision = build_frozen_vision(cfg.vision, cfg.get("use_features", False))
        self.Qformer, self.query_tokens = build_qformer(cfg.qformer, self.visual_encoder.num_features)
        copy_text_ffn_to_queries(self.Qformer)
        drop_text_path(self.Qformer)
        llm, self.opt_tokenizer = build_llm(cfg.llm, self.LLM_ARCH)
        self.opt_model = freeze(llm)
        self.eos_token_id = self.opt_tokenizer("\n", add_special_tokens=False).input_ids[0]
        self.opt_proj = nn.Linear(self.Qformer.config.hidden_size, self.opt_model.config.hidden_size)
        self.max_txt_len = cfg.get("max_txt_len", 32)
        self.prompt = cfg.get("prompt", "")
        self.prompt_length = self.opt_tokenizer(self.prompt, return_tensors="pt").attention_mask.sum(1)
        self._apply_lemmatizer = cfg.get("apply_lemmatizer", False)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Blip2Stage2OPT":
        """Build from a ``model`` section; ``stage1_checkpoint``, then ``finetuned`` or ``pretrained`` (LAVIS's rule)."""
        model = cls(cfg)
        if cfg.get("stage1_checkpoint"):
            load_stage1(model, cfg.stage1_checkpoint)
        model.load_checkpoint_from_config(cfg)
        return model

    def train(self, mode: bool = True) -> "Blip2Stage2OPT":
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

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """LAVIS's ``Blip2OPT.forward``: loss on ``text_input`` + "\\n" after the visual prompt."""
        return super().forward(with_image_features(samples))

    @torch.no_grad()
    def generate(self, samples: dict[str, Any], use_nucleus_sampling: bool = False, num_beams: int = 5,
                 max_length: int = 30, min_length: int = 1, top_p: float = 0.9,
                 repetition_penalty: Optional[float] = None, length_penalty: float = 1.0, num_captions: int = 1,
                 temperature: float = 1.0, prompt: Optional[str | list[str]] = None) -> list[str]:
        """Captions (new text only, stripped); ``max_length``/``min_length`` count generated tokens;
        ``repetition_penalty`` None is none (1.0)."""
        tokenizer = self.opt_tokenizer
        with self.maybe_autocast():
            vis, vis_atts = self.encode_image(samples)
            prompt = samples.get("prompt", self.prompt) if prompt is None else prompt
            prompts = [prompt] * vis.size(0) if isinstance(prompt, str) else list(prompt)
            tokenizer.padding_side = "left"
            tokens = tokenizer(prompts, return_tensors="pt", padding="longest").to(vis.device)
            embed = self.opt_model.get_input_embeddings()
            # .long(): a batch of empty prompts tokenizes to a float tensor of shape [B, 0].
            embeds = torch.cat([vis.to(embed.weight.dtype), embed(tokens.input_ids.long())], dim=1)
            atts = torch.cat([vis_atts, tokens.attention_mask.long()], dim=1)
            out = self.opt_model.generate(
                inputs_embeds=embeds, attention_mask=atts, do_sample=use_nucleus_sampling, top_p=top_p,
                temperature=temperature, num_beams=1 if use_nucleus_sampling else num_beams,
                max_new_tokens=max_length, min_new_tokens=min_length, eos_token_id=self.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                repetition_penalty=1.0 if repetition_penalty is None else repetition_penalty,
                length_penalty=length_penalty, num_return_sequences=num_captions)
        return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


@registry.register_model("blip2_stage2_llama")
class Blip2Stage2Llama(Blip2Stage2OPT):
    """BLIP-2 stage 2 with transformers' Llama (SmolLM2 in the embedded default; Vicuna and kin)."""

    LLM_ARCH = "llama"
    DEFAULT_MODEL_TYPE = "embedded"
    PRETRAINED_MODEL_CONFIG_DICT = {
        "embedded": "models/blip2_stage2_llama/embedded.yaml",
        "tiny": "models/blip2_stage2_llama/tiny.yaml",
    }

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``Blip2OPT.forward``'s loss for any decoder: cross-entropy on ``text_input`` + "\\n" tokens
        (the first ``prompt_length`` masked), after the visual prompt."""
        tokenizer = self.opt_tokenizer
        with self.maybe_autocast():
            vis, vis_atts = self.encode_image(samples)
        tokenizer.padding_side = "right"
        tokens = tokenizer([t + "\n" for t in samples["text_input"]], return_tensors="pt", padding="longest",
                           truncation=True, max_length=self.max_txt_len).to(vis.device)
        targets = tokens.input_ids.masked_fill(tokens.input_ids == tokenizer.pad_token_id, -100)
        if self.prompt:
            targets[:, :self.prompt_length] = -100
        embeds = torch.cat([vis, self.opt_model.get_input_embeddings()(tokens.input_ids)], dim=1)
        attention_mask = torch.cat([vis_atts, tokens.attention_mask], dim=1)
        with self.maybe_autocast():
            loss = caption_loss(self.opt_model, embeds, attention_mask, targets)
        return {"loss": loss}
