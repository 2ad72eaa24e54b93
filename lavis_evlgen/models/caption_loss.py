"""The captioning loss with the LLM's output head applied only where a caption token is predicted.

transformers' ``XForCausalLM(labels=...)`` projects every position onto the vocabulary, the visual prompt's
too, and keeps those ``[B, L, V]`` logits for the backward pass. Here the decoder runs once and the head
sees only the ``T`` positions that predict the ``T`` target tokens: the same loss (mean cross-entropy over
the targets that are not -100), with fewer FLOPs and a logits tensor ``T / L`` the size.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel

IGNORE = -100


def caption_loss(llm: PreTrainedModel, embeds: torch.Tensor, attention_mask: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` [B, T], the labels of the last T positions of ``embeds`` [B, L, D]."""
    length = targets.size(1)
    if length >= embeds.size(1):
        raise ValueError(f"{length} target positions need a longer input than {embeds.size(1)} positions")
    hidden = llm.base_model(inputs_embeds=embeds, attention_mask=attention_mask, return_dict=True).last_hidden_state
    logits = llm.get_output_embeddings()(hidden[:, -length - 1:-1])  # position i predicts token i + 1
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
