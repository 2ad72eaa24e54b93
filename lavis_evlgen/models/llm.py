"""Frozen language models and their tokenizers, from local paths or configs, for any family transformers knows.

The family is configuration: ``model.llm.path`` loads a local checkpoint with transformers' Auto classes (the
family is the checkpoint's ``model_type``); ``model.llm.config`` builds a random model of ``model.llm.family``
(``opt``, ``llama``, ``qwen2``, ...: transformers' ``model_type`` names). No code names a family.
"""
from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import (
    AttentionInterface,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

from lavis_evlgen.common.precision import attention, cpu_bf16_attention, cpu_has_native_bf16
from lavis_evlgen.models.byte_tokenizer import byte_tokenizer
from lavis_evlgen.models.frozen_bf16 import keep_bf16_weights
from lavis_evlgen.models.weights import require_weights

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ATTENTION = "evlgen_sdpa"


def llm_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, in the ``run.cpu_bf16_attention`` mode under a CPU bf16 autocast region.

    ``build_llm`` selects it (``attn_implementation="evlgen_sdpa"``) for the LLMs that take attention functions
    (Llama) on CPU-only machines with native bf16; elsewhere they keep transformers' "sdpa". Inside the region
    it prepares the call as transformers does (key and value heads repeated for grouped queries, the mask cut
    to the keys, causal when no mask is given) and hands it to ``precision.attention``.
    """
    if cpu_bf16_attention(query) is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    if is_causal is None:
        is_causal = query.shape[2] > 1 and attention_mask is None
    out = attention(query.contiguous(), key.contiguous(), value.contiguous(), attn_mask=attention_mask,
                    dropout_p=dropout, is_causal=is_causal, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, llm_attention)


def part_dtype(precision: str, key: str) -> torch.dtype:
    """The dtype a frozen part runs in: the configured one on GPU machines, fp32 on CPU-only ones."""
    if precision not in DTYPES:
        raise ValueError(f"{key}: precision must be one of {sorted(DTYPES)}, got '{precision}'")
    return DTYPES[precision] if torch.cuda.is_available() else torch.float32

def build_tokenizer(cfg: DictConfig, path: str | None) -> PreTrainedTokenizerBase:
    """The LLM's own tokenizer, the folder named by ``model.llm.tokenizer``, or the built-in byte tokenizer.

    ``model.llm.special_tokens`` (a mapping such as ``{bos_token: "</s>", pad_token: "[PAD]"}``) is passed to
    ``add_special_tokens``; ``model.llm.add_bos_token`` sets whether texts start with the BOS token.
    """
    source = cfg.get("tokenizer") or path
    if source is None:
        raise ValueError("model.llm.tokenizer: a random LLM needs a tokenizer ('byte' or a local folder)")
    if source == "byte":
        tokenizer = byte_tokenizer()
    else:
        tokenizer = AutoTokenizer.from_pretrained(require_weights(source, "model.llm.tokenizer"),
                                                  local_files_only=True, use_fast=cfg.get("use_fast", True))
    if cfg.get("special_tokens"):
        tokenizer.add_special_tokens(OmegaConf.to_container(cfg.special_tokens, resolve=True))
    if cfg.get("add_bos_token") is not None:
        if not hasattr(tokenizer, "add_bos_token"):
            raise ValueError(f"model.llm.add_bos_token: {type(tokenizer).__name__} has no such setting")
        tokenizer.add_bos_token = bool(cfg.add_bos_token)
    if cfg.get("special_tokens") and hasattr(tokenizer, "update_post_processor"):
        tokenizer.update_post_processor()  # a fast Llama tokenizer would keep adding its old BOS
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer

@torch.no_grad()
def fit_embeddings(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give tokens added by ``model.llm.special_tokens`` (e.g. Vicuna's ``[PAD]``) rows in the input and output
    embeddings, each the mean of the existing rows (deterministic: the LLM is frozen and not saved)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) <= rows:
        return
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    for matrix in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
        matrix.weight[rows:] = matrix.weight[:rows].mean(dim=0)

def llm_family(cfg: DictConfig, path: str | None) -> str:
    """The LLM's family: the checkpoint's ``model_type``, which ``model.llm.family`` must match if given."""
    family = cfg.get("family")
    if path:
        found = AutoConfig.from_pretrained(path, local_files_only=True).model_type
        if family and family != found:
            raise ValueError(f"model.llm.family: '{family}', but the checkpoint at model.llm.path is '{found}'")
        return found
    if not family:
        raise ValueError("model.llm.family: a random LLM (model.llm.config) needs its family, e.g. 'opt' or 'llama'")
    return family


def build_llm(cfg: DictConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build the frozen LLM of a ``model.llm`` section and its tokenizer.

    ``model.llm.path`` loads a local checkpoint; ``model.llm.config`` builds a random one of ``model.llm.family``
    (tests, skeletons).
    """
    path = cfg.get("path")
    dtype = part_dtype(cfg.get("precision", "fp16"), "model.llm.precision")
    if path:
        path = require_weights(path, "model.llm.path")
    family = llm_family(cfg, path)
    if path:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    else:
        settings = OmegaConf.to_container(cfg.get("config", {}), resolve=True)
        try:
            config = AutoConfig.for_model(family, **settings)
        except ValueError as err:
            raise ValueError(f"model.llm.family: transformers knows no model type '{family}'") from err
        model = AutoModelForCausalLM.from_config(config).to(dtype)
    if model._supports_attention_backend and not torch.cuda.is_available() and cpu_has_native_bf16():
        model.config._attn_implementation = ATTENTION  # where a run may autocast to bf16 on the CPU
    tokenizer = build_tokenizer(cfg, path)
    if cfg.get("special_tokens"):
        fit_embeddings(model, tokenizer)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ValueError(f"model.llm: tokenizer has {len(tokenizer)} tokens but the LLM embeds only "
                         f"{model.get_input_embeddings().num_embeddings}")
    logger.info("LLM %s (%s) in %s, attention %s", family, path or "random", dtype, model.config._attn_implementation)
    return model, tokenizer


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients and put the module in eval mode (it stays there: see EVLGen.train); its linear layers
    cast their weights to bf16 once for CPU bf16 autocast (``frozen_bf16``)."""
    for p in module.parameters():
        p.requires_grad_(False)
    keep_bf16_weights(module)
    return module.eval()
