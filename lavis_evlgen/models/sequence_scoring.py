"""Sample caption token sequences from an EVLGen model and score given ones (for SCST).

A mixin for EVLGen models (any :class:`~lavis_evlgen.models.visual_prompt.VisualPromptLM`).
:meth:`SequenceScoringMixin.sample_captions` samples (or greedily decodes) captions and keeps their token
ids; a forward pass whose samples carry those ids (:data:`SEQUENCE_KEYS`) returns the weighted sum of their
negative log-likelihoods under the current model, with gradients into the trainable parts. Both use
``generate``'s layout, ``caption_prefix`` then the caption tokens, with position ids counted over the
unmasked positions as transformers' ``generate`` counts them, so the scored log-probabilities are those of
the distribution the captions were sampled from.

Self-critical training goes through ``model(samples)`` (not a side method) so that a
DistributedDataParallel wrapper sees the forward pass and synchronises the gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lavis_evlgen.models.visual_prompt import mask_positions

SEQUENCE_KEYS = ("sequences", "sequence_mask", "sequence_source", "sequence_weights")


@dataclass
class SampledCaptions:
    """Captions drawn for a batch: ``R`` rows, ``num_samples`` consecutive rows per sample."""

    tokens: torch.Tensor   # [R, T] token ids, padded after the end token
    mask: torch.Tensor     # [R, T] 1 up to and including the end token
    source: torch.Tensor   # [R] index of the batch sample each row captions
    texts: list[str]       # decoded captions, stripped, as generate returns them


class SequenceScoringMixin:
    """Adds caption sampling with token ids, and weighted sequence likelihoods in ``forward``."""

    @torch.no_grad()
    def sample_captions(self, samples: dict[str, Any], num_samples: int = 1, greedy: bool = False,
                        max_length: int = 30, temperature: float = 1.0) -> SampledCaptions:
        """``num_samples`` captions per sample, drawn from the full distribution (no top-k/top-p), or greedy."""
        embeds, atts = self.caption_prefix(samples)
        options = dict(do_sample=False, num_beams=1) if greedy else dict(do_sample=True, top_k=0, top_p=1.0,
                                                                         temperature=temperature)
        tokens = self.llm.generate(inputs_embeds=embeds, attention_mask=atts, max_new_tokens=max_length,
                                   eos_token_id=self.end_token_id, pad_token_id=self.tokenizer.pad_token_id,
                                   num_return_sequences=num_samples, **options)
        is_end = tokens == self.end_token_id
        mask = ((is_end.long().cumsum(1) - is_end.long()) == 0).long()
        texts = [self.tokenizer.decode(row[row_mask.bool()], skip_special_tokens=True).strip()
                 for row, row_mask in zip(tokens, mask)]
        source = torch.arange(embeds.size(0), device=tokens.device).repeat_interleave(num_samples)
        return SampledCaptions(tokens=tokens, mask=mask, source=source, texts=texts)

    def sequence_nll(self, samples: dict[str, Any]) -> torch.Tensor:
        """``sum_r weight_r * -log p(sequence_r | sample source_r)`` over the rows in ``samples``."""
        tokens, mask = samples["sequences"], samples["sequence_mask"].long()
        source, weights = samples["sequence_source"], samples["sequence_weights"]
        prefix, prefix_atts = self.caption_prefix(samples)
        prefix, prefix_atts = prefix[source], prefix_atts[source]
        embeds = torch.cat([prefix, self.embed_text(tokens)], dim=1)
        atts = torch.cat([prefix_atts, mask], dim=1)
        hidden = self.llm.base_model(inputs_embeds=embeds, attention_mask=atts, position_ids=mask_positions(atts),
                                     return_dict=True).last_hidden_state
        start = prefix.size(1) - 1  # the logits at position i predict token i + 1
        logits = self.llm.get_output_embeddings()(hidden[:, start:start + tokens.size(1)]).float()
        log_probs = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return (weights.to(log_probs.dtype) * -(log_probs * mask).sum(1)).sum()

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"loss": sequence_nll}`` when ``samples`` carry sequences, else the model's captioning loss."""
        if SEQUENCE_KEYS[0] in samples:
            missing = [key for key in SEQUENCE_KEYS if key not in samples]
            if missing:
                raise KeyError(f"samples with 'sequences' also need {missing}")
            return {"loss": self.sequence_nll(samples)}
        return super().forward(samples)
