"""The captioning loss with the LLM's output head applied only where a caption token is predicted.

transformers' ``XForCausalLM(labels=...)`` projects every position onto the vocabulary, the visual prompt's
too, and keeps those ``[B, L, V]`` logits for the backward pass. Here the decoder runs once and the head
sees only the positions that predict a target token (not -100): the same loss (mean cross-entropy over
those targets), with a fraction of the head's FLOPs. The selected hidden states are gathered into one
contiguous ``[N, D]`` matrix, so the head is one matrix multiply; a strided ``[B, T, D]`` slice would make
``matmul`` fall back to a batched multiply that copies the ``[V, D]`` head weight once per batch item.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel

IGNORE = -100


def caption_loss(llm: PreTrainedModel, embeds: torch.Tensor, attention_mask: torch.Tensor,
                 targets: torch.Tensor, position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` [B, T], the labels of the last T positions of ``embeds`` [B, L, D]."""
    length = targets.size(1)
    if length >= embeds.size(1):
        raise ValueError(f"{length} target positions need a longer input than {embeds.size(1)} positions")
    hidden = llm.base_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                            return_dict=True).last_hidden_state
    scored = targets != IGNORE
    predicting = hidden[:, -length - 1:-1][scored]  # position i predicts token i + 1; [N, D], contiguous
    logits = llm.get_output_embeddings()(predicting)
    return F.cross_entropy(logits.float(), targets[scored])
