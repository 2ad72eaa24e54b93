"""EVLGen: frozen ViT -> ln_vision -> f_proj1 -> TomeFormer -> f_proj2 -> frozen LLM (soft prompt).

One stage, one loss: cross-entropy on the caption tokens only (visual positions, prompt and padding
are masked out). Trainable: ``ln_vision`` (as in BLIP-2), ``proj1`` (f_proj1), the TomeFormer and
``proj2`` (f_proj2). The vision encoder and the LLM are frozen and stay in eval mode whatever
``model.train()`` is called with.

Trainable size at paper scale (EVA-ViT-g width 1408, bert-base TomeFormer, OPT-2.7b width 2560):
the paper quotes 110M, bert-base's nominal size, but BERT's word embeddings (23.4M) and pooler
(0.6M) are never used on visual tokens, so the TomeFormer holds 85.5M and the whole trainable set
88.5M (TomeFormer 85.5M + f_proj1 1.08M + f_proj2 1.97M + ln_vision 2.8k);
``tests/models/test_model_zoo.py`` checks this count.

LLM input layout: [visual prompt][prompt text][caption][caption end], as in BLIP-2, where the text starts
with the BOS token when the tokenizer adds one (OPT's ``</s>``, Llama's ``<s>``; ``model.llm.add_bos_token``
overrides the tokenizer). ``model.bos_first: true`` puts the LLM's BOS token in front, [BOS][visual
prompt][...]: a small LLM uses position 0 as an attention sink, and with the visual prompt there the first
visual token is spent on it. Off in the paper configs; on for the embedded SmolLM2, where it cut the loss
after 100 CPU steps from about 4.0 to 2.2.

Options that reproduce the authors' release (on in the model types that load their weights):

* ``model.target_bos``: with an empty prompt, the loss also predicts the text's BOS token from the visual
  prompt (the authors' OPT code masks the prompt only when there is one, and the prompt's tokens include
  the BOS). Off: the BOS is masked like prompt text. No effect where the tokenizer starts texts with no
  BOS (SmolLM2's, unless ``model.llm.add_bos_token``; the built-in byte tokenizer).
* ``model.caption_end``: the text ending every caption and stopping generation ("\n" by default; the
  authors' Vicuna model ends captions with ``</s>``).
* ``model.repetition_penalty``: the penalty ``generate`` and ``predict_answers`` use when the caller
  passes none (1.0; the authors' Vicuna model generates with 1.5).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from lavis.models.base_model import BaseModel
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import BertConfig

from lavis_evlgen.common.config_check import optional_flag, optional_number, optional_probability
from lavis_evlgen.models.answering import AnswerByGeneration
from lavis_evlgen.models.caption_loss import caption_loss
from lavis_evlgen.models.llm import build_llm, freeze, part_dtype
from lavis_evlgen.models.loading import EVLGEN_KEYS
from lavis_evlgen.models.model_types import PluginModelTypes
from lavis_evlgen.models.tomeformer import TomeFormer
from lavis_evlgen.models.vision import build_vision_encoder
from lavis_evlgen.models.weights import require_weights

logger = logging.getLogger(__name__)

CAPTION_END = "\n"


def build_tomeformer(cfg: DictConfig) -> TomeFormer:
    """TomeFormer from a local BERT (``model.tomeformer.bert``) or randomly from ``model.tomeformer.config``.

    ``model.tomeformer.dropout`` (optional) sets the hidden and attention dropout of every layer, replacing
    the BERT config's (0.1 for BERT and MiniLM).
    """
    dropout = optional_probability(cfg, "dropout", "model.tomeformer")
    options = dict(
        r=OmegaConf.to_container(cfg.r) if OmegaConf.is_config(cfg.get("r")) else cfg.get("r", 0),  # list: per layer
        merge_mode=cfg.get("merge_mode", "mean"),
        proportional_attention=cfg.get("proportional_attention", False),
    )
    if cfg.get("bert"):
        path = require_weights(cfg.bert, "model.tomeformer.bert")
        return TomeFormer.from_pretrained(path, num_hidden_layers=cfg.get("num_layers"), dropout=dropout, **options)
    settings = OmegaConf.to_container(cfg.get("config", {}), resolve=True)
    if cfg.get("num_layers"):
        settings["num_hidden_layers"] = cfg.num_layers
    if dropout is not None:
        settings["hidden_dropout_prob"] = settings["attention_probs_dropout_prob"] = dropout
    return TomeFormer.from_config(BertConfig(**settings), **options)


class EVLGenBase(AnswerByGeneration, PluginModelTypes, BaseModel):
    """Shared EVLGen model; subclasses name the LLM family (``LLM_ARCH``) and their model types."""

    STAGE = "EVLGen"
    LOSSES = ("caption",)
    CONNECTOR = "tomeformer"
    MIN_BATCH = 1
    LLM_ARCH = ""
    KEY_MAP = EVLGEN_KEYS
    TRAINABLE_PARTS = ("ln_vision", "proj1", "tomeformer", "proj2")

    def __init__(self, vision: Optional[nn.Module], vision_width: int, tomeformer: TomeFormer,
                 llm: nn.Module, tokenizer, prompt: str = "", max_txt_len: int = 32,
                 vision_dtype: torch.dtype = torch.float32, apply_lemmatizer: bool = False,
                 bos_first: bool = False, target_bos: bool = False, caption_end: str = CAPTION_END,
                 repetition_penalty: float = 1.0):
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
        self.prompt = prompt
        self.max_txt_len = max_txt_len
        self.caption_end = caption_end
        end_ids = tokenizer(caption_end, add_special_tokens=False).input_ids
        if not end_ids:
            raise ValueError(f"model.caption_end: {caption_end!r} is no token of the LLM's tokenizer")
        self.end_token_id = end_ids[-1]
        if bos_first and tokenizer.bos_token_id is None:
            raise ValueError("model.bos_first: the LLM's tokenizer has no BOS token")
        self.bos_first = bos_first
        self.target_bos = target_bos
        self.repetition_penalty = repetition_penalty
        self._apply_lemmatizer = apply_lemmatizer

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, cfg: DictConfig) -> "EVLGenBase":
        """Build from a ``model`` config section (see lavis_evlgen/configs/models/*/*.yaml for the keys)."""
        vision_cfg = cfg.get("vision")
        use_features = cfg.get("use_features", False)
        vision = None if use_features else build_vision_encoder(vision_cfg)
        vision_width = vision.num_features if vision is not None else vision_cfg.width
        vision_dtype = part_dtype(vision_cfg.get("precision", "fp16"), "model.vision.precision")
        if vision is not None:
            vision = vision.to(vision_dtype)
        llm, tokenizer = build_llm(cfg.llm, cls.LLM_ARCH)
        model = cls(vision=vision, vision_width=vision_width, tomeformer=build_tomeformer(cfg.tomeformer),
                    llm=llm, tokenizer=tokenizer, prompt=cfg.get("prompt", ""),
                    max_txt_len=cfg.get("max_txt_len", 32), vision_dtype=vision_dtype,
                    apply_lemmatizer=cfg.get("apply_lemmatizer", False),
                    bos_first=optional_flag(cfg, "bos_first", "model"),
                    target_bos=optional_flag(cfg, "target_bos", "model"),
                    caption_end=cfg.get("caption_end", CAPTION_END),
                    repetition_penalty=optional_number(cfg, "repetition_penalty", "model", lambda v: v > 0,
                                                       "must be a positive number") or 1.0)
        if optional_flag(cfg, "match_embedding_scale", "model"):
            model.match_embedding_scale()
        model.load_checkpoint_from_config(cfg)
        return model

    @torch.no_grad()
    def match_embedding_scale(self) -> None:
        """Rescale f_proj2 (bias zeroed) so the soft prompt starts at the RMS of the LLM's input embeddings.

        PyTorch's default init maps the TomeFormer's unit-variance output to an RMS of about 0.58, while
        e.g. SmolLM2's token embeddings have 0.14: the visual tokens would enter the frozen LLM about 4x
        larger than any word. For zero-mean, unit-variance inputs the output RMS is the root mean square
        row norm of the weight, so the rescaling needs no data.
        """
        target = self.llm.get_input_embeddings().weight.float().pow(2).mean().sqrt()
        current = self.proj2.weight.float().pow(2).sum(dim=1).mean().sqrt()
        self.proj2.weight.mul_((target / current).to(self.proj2.weight.dtype))
        self.proj2.bias.zero_()

    def train(self, mode: bool = True) -> "EVLGenBase":
        """Train the connector only; the frozen encoder and LLM stay in eval mode."""
        super().train(mode)
        if self.visual_encoder is not None:
            self.visual_encoder.eval()
        self.llm.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.proj1.weight.device

    # ------------------------------------------------------------------ forward
    def encode_image(self, samples: dict[str, Any], return_source: bool = False):
        """Visual soft prompt ``[B, T, D_llm]`` and its mask ``[B, T]`` (``source`` too if asked).

        Takes ``samples["image"]`` through the frozen ViT, or precomputed ViT outputs from
        ``samples["image_features"]`` ([B, N, D_vit], with an optional ``image_features_mask``).
        """
        mask = samples.get("image_features_mask")
        if "image_features" in samples:
            feats = samples["image_features"].float()
        else:
            feats = self.vision_features(samples["image"])
        out = self.tomeformer(self.proj1(self.ln_vision(feats)), attention_mask=mask)
        embeds = self.proj2(out.last_hidden_state)
        atts = out.attention_mask.long()
        return (embeds, atts, out.source) if return_source else (embeds, atts)

    @torch.no_grad()
    def vision_features(self, image: torch.Tensor) -> torch.Tensor:
        """Frozen ViT tokens ``[B, N, D_vit]`` in fp32 (the input to the feature cache)."""
        return self.visual_encoder(image.to(self.vision_dtype)).float()

    def _embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        # .long(): a batch of empty prompts tokenizes to a float tensor of shape [B, 0].
        return self.llm.get_input_embeddings()(input_ids.long())

    def llm_inputs(self, vis: torch.Tensor, vis_atts: torch.Tensor, input_ids: torch.Tensor,
                   text_atts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LLM input embeddings [B, L, D] and mask [B, L]: [BOS if ``bos_first``][visual prompt][text]."""
        llm_dtype = self.llm.get_input_embeddings().weight.dtype
        parts, masks = [vis.to(llm_dtype), self._embed_text(input_ids)], [vis_atts, text_atts.long()]
        if self.bos_first:
            bos = torch.full((vis.size(0), 1), self.tokenizer.bos_token_id, device=vis.device)
            parts.insert(0, self._embed_text(bos))
            masks.insert(0, torch.ones_like(bos))
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Captioning loss: cross-entropy on ``text_input`` tokens after the visual prompt and prompt text."""
        vis, vis_atts = self.encode_image(samples)
        prompt = samples.get("prompt", self.prompt)
        prompts = [prompt] * vis.size(0) if isinstance(prompt, str) else list(prompt)
        texts = [p + t + self.caption_end for p, t in zip(prompts, samples["text_input"])]
        self.tokenizer.padding_side = "right"
        tokens = self.tokenizer(texts, return_tensors="pt", padding="longest", truncation=True,
                                max_length=self.max_txt_len).to(vis.device)
        targets = tokens.input_ids.masked_fill(tokens.attention_mask == 0, -100)
        prompt_lens = [0 if self.target_bos and not p else len(ids)
                       for p, ids in zip(prompts, self.tokenizer(prompts).input_ids)]
        for row, n in enumerate(prompt_lens):
            targets[row, :n] = -100
        embeds, atts = self.llm_inputs(vis, vis_atts, tokens.input_ids, tokens.attention_mask)
        return {"loss": caption_loss(self.llm, embeds, atts, targets)}

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, samples: dict[str, Any], use_nucleus_sampling: bool = False, num_beams: int = 5,
                 max_length: int = 30, min_length: int = 1, top_p: float = 0.9,
                 repetition_penalty: Optional[float] = None, length_penalty: float = 1.0, num_captions: int = 1,
                 temperature: float = 1.0, prompt: Optional[str | list[str]] = None) -> list[str]:
        """Captions (only the new text) for ``samples["image"]`` or ``samples["image_features"]``.

        ``max_length``/``min_length`` count generated tokens; ``repetition_penalty`` None takes the model's
        (``model.repetition_penalty``). Returns ``num_captions`` strings per image.
        """
        if repetition_penalty is None:
            repetition_penalty = self.repetition_penalty
        vis, vis_atts = self.encode_image(samples)
        prompt = samples.get("prompt", self.prompt) if prompt is None else prompt
        prompts = [prompt] * vis.size(0) if isinstance(prompt, str) else list(prompt)
        self.tokenizer.padding_side = "left"
        tokens = self.tokenizer(prompts, return_tensors="pt", padding="longest").to(vis.device)
        embeds, atts = self.llm_inputs(vis, vis_atts, tokens.input_ids, tokens.attention_mask)
        out = self.llm.generate(
            inputs_embeds=embeds, attention_mask=atts, do_sample=use_nucleus_sampling, top_p=top_p,
            temperature=temperature, num_beams=num_beams, max_new_tokens=max_length,
            min_new_tokens=min_length, eos_token_id=self.end_token_id,
            pad_token_id=self.tokenizer.pad_token_id, repetition_penalty=repetition_penalty,
            length_penalty=length_penalty, num_return_sequences=num_captions)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
