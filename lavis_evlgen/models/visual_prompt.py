"""A frozen LLM read through a visual soft prompt: the one LLM input layout, caption loss and ``generate``.

EVLGen, its self-critical sequence scoring and the BLIP-2 stage-2 baseline all lay the LLM's input out here:

    [BOS if ``bos_first``][visual prompt][prompt text][caption][caption end]

The text starts with the BOS token when the tokenizer adds one (OPT's ``</s>``, Llama's ``<s>``;
``model.llm.add_bos_token`` overrides the tokenizer). The model prepends its ``prompt`` (``model.prompt``, or
``samples["prompt"]``, one string or one per sample) to every caption; text processors do not. Training
right-pads the text; ``generate`` and sequence scoring left-pad the prompt. A visual prompt with masked
slots (a variable token count, e.g. from threshold merging) has them moved in front of its tokens, and
position ids are counted over the unmasked positions, as transformers' ``generate`` counts them, so each
row gets the loss and captions it gets alone. The prompt texts go to ``encode_image`` as
``samples["condition_text"]``, for connectors that read the question (the TomeFormer's ``condition``).

Options, each a key of the ``model`` section:

* ``bos_first``: the LLM's BOS token in front. A small LLM uses position 0 as an attention sink, and with
  the visual prompt there the first visual token is spent on it.
* ``match_embedding_scale``: the projection into the LLM (``PROJECTION``) starts with the soft prompt at the
  RMS of the LLM's input embeddings (see :meth:`VisualPromptLM.match_embedding_scale`).
* ``target_bos``: with an empty prompt, the loss also predicts the text's BOS token from the visual prompt
  (LAVIS's Blip2OPT, and the authors' OPT code, mask the prompt only when there is one, and the prompt's
  tokens include the BOS). Off: the BOS is masked like prompt text. No effect where the tokenizer starts
  texts with no BOS.
* ``caption_end``: the text ending every caption and stopping generation ("\\n" by default).
* ``repetition_penalty``: the penalty ``generate`` uses when the caller passes none (1.0).
* ``prompt``, ``max_txt_len``: the prompt text, and the token budget of prompt + caption in training.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Optional

import torch
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lavis_evlgen.common.config_check import optional_flag, optional_number
from lavis_evlgen.models.caption_loss import caption_loss

CAPTION_END = "\n"


def layout_options(cfg: DictConfig) -> dict[str, Any]:
    """The layout options of a ``model`` section, checked (errors name the key)."""
    return dict(prompt=cfg.get("prompt", ""), max_txt_len=cfg.get("max_txt_len", 32),
                bos_first=optional_flag(cfg, "bos_first", "model"),
                target_bos=optional_flag(cfg, "target_bos", "model"),
                caption_end=cfg.get("caption_end", CAPTION_END),
                repetition_penalty=optional_number(cfg, "repetition_penalty", "model", lambda v: v > 0,
                                                   "must be a positive number") or 1.0)


def batch_size(samples: dict[str, Any]) -> int:
    """The number of images or clips in ``samples``."""
    for key in ("image", "image_features", "video"):
        if key in samples:
            return samples[key].size(0)
    raise KeyError("samples need 'image', 'image_features' or 'video'")


def padding_first(vis: torch.Tensor, vis_atts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft prompt [B, T, D] with its masked slots moved in front of its tokens (order otherwise kept), so
    the last visual position, which predicts the first text token, is a token."""
    if bool(vis_atts.bool().all()):
        return vis, vis_atts
    order = vis_atts.argsort(dim=1, stable=True)
    return vis.gather(1, order.unsqueeze(-1).expand_as(vis)), vis_atts.gather(1, order)


def mask_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, L] counted over the unmasked positions (masked ones get 1), as ``generate`` counts them."""
    return (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)


class VisualPromptLM:
    """Mixin for models whose ``encode_image(samples)`` gives a soft prompt ``[B, T, D_llm]`` and its mask.

    Subclasses hold the frozen LLM as ``llm`` and its tokenizer as ``tokenizer`` (attributes or properties),
    name their trainable projection into the LLM in ``PROJECTION``, and call :meth:`set_layout` once built.
    """

    PROJECTION = "proj2"
    llm: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    def set_layout(self, prompt: str = "", max_txt_len: int = 32, bos_first: bool = False, target_bos: bool = False,
                   caption_end: str = CAPTION_END, repetition_penalty: float = 1.0) -> None:
        """Check and keep the layout options (see the module docstring)."""
        end_ids = self.tokenizer(caption_end, add_special_tokens=False).input_ids
        if not end_ids:
            raise ValueError(f"model.caption_end: {caption_end!r} is no token of the LLM's tokenizer")
        if bos_first and self.tokenizer.bos_token_id is None:
            raise ValueError("model.bos_first: the LLM's tokenizer has no BOS token")
        self.prompt, self.max_txt_len, self.caption_end = prompt, max_txt_len, caption_end
        self.end_token_id = end_ids[-1]
        self.bos_first, self.target_bos, self.repetition_penalty = bos_first, target_bos, repetition_penalty

    def maybe_autocast(self, dtype: Optional[torch.dtype] = None) -> ContextManager:
        """The precision context of the connector and LLM passes (none here; the runner sets one)."""
        return contextlib.nullcontext()

    @torch.no_grad()
    def match_embedding_scale(self) -> None:
        """Rescale the projection into the LLM (bias zeroed) so the soft prompt starts at the RMS of the LLM's
        input embeddings.

        PyTorch's default init maps a unit-variance connector output to an RMS of about 0.58, while e.g.
        SmolLM2's token embeddings have 0.14: the visual tokens would enter the frozen LLM about 4x larger
        than any word. For zero-mean, unit-variance inputs the output RMS is the root mean square row norm
        of the weight, so the rescaling needs no data.
        """
        projection = getattr(self, self.PROJECTION)
        target = self.llm.get_input_embeddings().weight.float().pow(2).mean().sqrt()
        current = projection.weight.float().pow(2).sum(dim=1).mean().sqrt()
        projection.weight.mul_((target / current).to(projection.weight.dtype))
        projection.bias.zero_()

    # ------------------------------------------------------------------ layout
    def prompts_for(self, samples: dict[str, Any], batch: int, prompt: Optional[str | list[str]] = None) -> list[str]:
        """One prompt text per sample: ``prompt``, else ``samples["prompt"]``, else the model's."""
        prompt = samples.get("prompt", self.prompt) if prompt is None else prompt
        return [prompt] * batch if isinstance(prompt, str) else list(prompt)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The LLM's input embeddings of token ids (``.long()``: empty prompts tokenize to a float [B, 0])."""
        return self.llm.get_input_embeddings()(input_ids.long())

    def llm_inputs(self, vis: torch.Tensor, vis_atts: torch.Tensor, input_ids: torch.Tensor,
                   text_atts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LLM input embeddings [B, L, D] and mask [B, L]: [BOS if ``bos_first``][visual prompt][text]."""
        llm_dtype = self.llm.get_input_embeddings().weight.dtype
        vis, vis_atts = padding_first(vis, vis_atts)
        parts, masks = [vis.to(llm_dtype), self.embed_text(input_ids)], [vis_atts.long(), text_atts.long()]
        if self.bos_first:
            bos = torch.full((vis.size(0), 1), self.tokenizer.bos_token_id, device=vis.device)
            parts.insert(0, self.embed_text(bos))
            masks.insert(0, torch.ones_like(bos))
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def caption_prefix(self, samples: dict[str, Any],
                       prompt: Optional[str | list[str]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual prompt + left-padded prompt text: embeddings [B, P, D] and mask [B, P], where captions start."""
        prompts = self.prompts_for(samples, batch_size(samples), prompt)
        vis, vis_atts = self.encode_image({**samples, "condition_text": prompts})
        self.tokenizer.padding_side = "left"
        tokens = self.tokenizer(prompts, return_tensors="pt", padding="longest").to(vis.device)
        return self.llm_inputs(vis, vis_atts, tokens.input_ids, tokens.attention_mask)

    # ------------------------------------------------------------------ loss and generation
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Captioning loss: cross-entropy on ``text_input`` tokens after the visual prompt and prompt text."""
        prompts = self.prompts_for(samples, batch_size(samples))
        with self.maybe_autocast():
            vis, vis_atts = self.encode_image({**samples, "condition_text": prompts})
        texts = [p + t + self.caption_end for p, t in zip(prompts, samples["text_input"])]
        self.tokenizer.padding_side = "right"
        tokens = self.tokenizer(texts, return_tensors="pt", padding="longest", truncation=True,
                                max_length=self.max_txt_len).to(vis.device)
        targets = tokens.input_ids.masked_fill(tokens.attention_mask == 0, -100)
        prompt_lens = [0 if self.target_bos and not p else len(ids)
                       for p, ids in zip(prompts, self.tokenizer(prompts).input_ids)]
        for row, n in enumerate(prompt_lens):
            targets[row, :n] = -100
        empty = (targets == -100).all(dim=1)
        if empty.any():
            row = int(empty.nonzero()[0])
            raise ValueError(f"model.max_txt_len: {self.max_txt_len} tokens leave no caption token to learn after "
                             f"the prompt ({prompt_lens[row]} tokens: {prompts[row]!r}); raise it")
        embeds, atts = self.llm_inputs(vis, vis_atts, tokens.input_ids, tokens.attention_mask)
        with self.maybe_autocast():
            loss = caption_loss(self.llm, embeds, atts, targets, position_ids=mask_positions(atts))
        return {"loss": loss}

    @torch.no_grad()
    def generate(self, samples: dict[str, Any], use_nucleus_sampling: bool = False, num_beams: int = 5,
                 max_length: int = 30, min_length: int = 1, top_p: float = 0.9,
                 repetition_penalty: Optional[float] = None, length_penalty: float = 1.0, num_captions: int = 1,
                 temperature: float = 1.0, prompt: Optional[str | list[str]] = None) -> list[str]:
        """Captions (only the new text, stripped) for ``samples["image"]`` or ``samples["image_features"]``.

        ``max_length``/``min_length`` count generated tokens; ``repetition_penalty`` None takes the model's
        (``model.repetition_penalty``); sampling uses one beam, as LAVIS's BLIP-2 does. Returns ``num_captions``
        strings per image.
        """
        with self.maybe_autocast():
            embeds, atts = self.caption_prefix(samples, prompt)
            out = self.llm.generate(
                inputs_embeds=embeds, attention_mask=atts, do_sample=use_nucleus_sampling, top_p=top_p,
                temperature=temperature, num_beams=1 if use_nucleus_sampling else num_beams,
                max_new_tokens=max_length, min_new_tokens=min_length, eos_token_id=self.end_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                repetition_penalty=self.repetition_penalty if repetition_penalty is None else repetition_penalty,
                length_penalty=length_penalty, num_return_sequences=num_captions)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
