"""The captioning loss with the LLM's output head applied only where a caption token is predicted.

transformers' ``XForCausalLM(labels=...)`` projects every position onto the vocabulary, the visual prompt's
too, and keeps those ``[B, L, V]`` logits for the backward pass. Here the decoder runs once and the head
sees only the positions that predict a target token (not -100): the same loss (mean cross-entropy over
those targets), with a fraction of the head's FLOPs. The selected hidden states are gathered into one
contiguous ``[N, D]`` matrix, so the head is one matrix multiply; a strided ``[B, T, D]`` slice would make
``matmul`` fall back to a batched multiply that copies the ``[V, D]`` head weight once per batch item.

The cross-entropy itself (:class:`ChunkedCrossEntropy`) works on the head's logits in their own dtype (bf16
or fp16 under autocast) a few rows at a time: ``F.cross_entropy(logits.float())`` would write an fp32 copy of
all ``[N, V]`` logits, its log-softmax and, in the backward pass, a zero-filled ``[N, V]`` gradient, three
buffers of 20 MB for the embedded SmolLM2 at batch 8. Chunks of 2 MiB made the step 1.04x slower on a Zen 4
EPYC (40 small chunks each way), chunks of 16 MiB 0.96-0.97x (five chunks); see the README's speed notes.
"""
from __future__ import annotations

from typing import Optional

import torch
from transformers import PreTrainedModel

IGNORE = -100
CHUNK_ELEMENTS = 1 << 22  # fp32 elements per chunk of rows (16 MiB): few chunks, each far below [N, V]


def rows_per_chunk(vocabulary: int) -> int:
    """Rows of ``[N, vocabulary]`` logits handled at once: as many as fit ``CHUNK_ELEMENTS``, at least one."""
    return max(1, CHUNK_ELEMENTS // vocabulary)


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``logits`` [N, V] against ``targets`` [N], in fp32 a chunk of rows at a time.

    The forward pass keeps the logits (the head's output, which autograd holds anyway) and each row's
    log-sum-exp [N]; the backward pass forms ``(softmax - one_hot) / N`` chunk by chunk straight into the
    gradient, in the logits' dtype, as ``F.cross_entropy(logits.float(), targets)`` followed by the cast back
    would, up to fp32 rounding.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        step = rows_per_chunk(logits.size(1))
        lse = torch.empty(logits.size(0), dtype=torch.float32, device=logits.device)
        for start in range(0, logits.size(0), step):
            lse[start:start + step] = torch.logsumexp(logits[start:start + step].float(), dim=1)
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        return (lse - picked).mean()

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        step = rows_per_chunk(logits.size(1))
        scale = grad_loss.float() / logits.size(0)
        grad = torch.empty_like(logits)
        for start in range(0, logits.size(0), step):
            stop = min(start + step, logits.size(0))
            probs = logits[start:stop].sub(lse[start:stop, None]).exp_()  # fp32 by promotion; logits untouched
            probs[torch.arange(stop - start, device=probs.device), targets[start:stop]] -= 1.0
            grad[start:stop] = probs.mul_(scale)
        return grad, None


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
    logits = llm.get_output_embeddings()(predicting)  # [N, V]
    return ChunkedCrossEntropy.apply(logits, targets[scored])
