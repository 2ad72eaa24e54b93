"""TomeFormer: the EVLGen connector, a BERT encoder that merges visual tokens in every layer.

Each layer runs BERT's self-attention block (attention.self query/key/value, attention.output with its
residual and LayerNorm), then merges r tokens with ToMe bipartite soft matching on the layer's attention keys
averaged over heads, then runs BERT's MLP (intermediate, output) on the merged tokens. The class token
(position 0, the ViT CLS) is never merged, so with 257 input tokens (256 patches + CLS), 12 layers and
r=19 the output has 29 tokens (28 + CLS).

Inputs are visual tokens already projected to the BERT width (f_proj1 outputs). As in the EVLGen authors'
models, which feed them to BertModel as ``inputs_embeds``, BERT's position embeddings, token-type-0
embedding and embedding LayerNorm are applied (all trainable); word embeddings and the pooler are unused
and dropped. Parameter names match BertModel's (``embeddings.position_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``, ...), so a BERT checkpoint loads with its own names.

Size: a bert-base TomeFormer (hidden 768, 12 layers, 12 heads, intermediate 3072, 512 positions) has
85,450,752 parameters (BERT-base's 109,482,240 less 23,440,896 word embeddings and 590,592 pooler);
with 6 layers, 42,923,520.

The source map (which input tokens each output token covers) is always returned: one [B, T, N] 0/1
tensor per layer, far cheaper than the layer's attention.

Beyond the paper (each off by default; off, the arithmetic is the paper's):

* ``threshold``: adaptive budgets. A layer merges only the tokens whose best match is at least that similar
  (at most r), so a simple image ends with fewer tokens than a busy one; items of a batch then differ in
  length and the output's ``attention_mask`` marks each item's tokens.
* ``mean_tokens``: adaptive budgets trained as they are used. In training, each layer's threshold is the one
  at which the batch merges the fixed schedule's r per item on average (``batch_threshold``, each item at most
  ``cap_factor`` times r), so the mean count follows the schedule that ends at ``mean_tokens`` while each image
  gets its own; a running average of those thresholds (buffers, saved with the weights) is what evaluation
  merges by, as BatchNorm keeps its statistics. The thresholds move with the keys as training moves them.
* ``tokens`` / ``random_tokens``: one model, many budgets. The per-layer r is derived from a final token
  count (``r_for_tokens``): fixed, or drawn per training forward from a range (Matryoshka Query Transformer's
  idea for a merging connector) so that one checkpoint serves any count in it at inference
  (``set_merge_schedule``).
* ``condition``: question-conditioned merging (see ``forward``).
* ``registers``: learnable tokens that join every layer's attention and MLP, are never merged and never reach
  the LLM: register tokens (Darcet et al., 2024, "Vision Transformers Need Registers") for a merging connector,
  a place for global content that merging would otherwise have to keep in the visual tokens. Drawn at random
  by default; ``register_init="empty_text"`` starts them at the empty question's word embeddings instead.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

from lavis_evlgen.common.precision import attention
from lavis_evlgen.models.tome import (
    batch_threshold,
    bipartite_soft_matching,
    compact,
    merge_mask,
    merge_source,
    merge_wavg,
    pad_tokens,
    parse_r,
    parse_threshold,
    r_for_tokens,
)

MERGE_MODES = ("mean", "wavg")
REGISTER_INITS = ("random", "empty_text")


@dataclass
class TomeFormerOutput:
    """last_hidden_state [B, T, H]; attention_mask [B, T] long (1 valid); source [B, T, N] 0/1 in the
    hidden state's dtype (input tokens covered by each output token); tokens_per_layer: T after each layer
    (with a threshold, the longest item's count; each item's own final count is ``attention_mask.sum(1)``)."""

    last_hidden_state: torch.Tensor
    attention_mask: torch.Tensor
    source: torch.Tensor
    tokens_per_layer: list[int]


class VisualEmbeddings(nn.Module):
    """BERT's embedding block for visual tokens given as inputs_embeds: adds the token-type-0 and position
    embeddings, then LayerNorm and dropout (BertEmbeddings without word embeddings)."""

    def __init__(self, bert_embeddings: BertEmbeddings, keep_word_embeddings: bool = False):
        super().__init__()
        if keep_word_embeddings:
            self.word_embeddings = bert_embeddings.word_embeddings.requires_grad_(False)
        self.position_embeddings = bert_embeddings.position_embeddings
        self.token_type_embeddings = bert_embeddings.token_type_embeddings
        self.LayerNorm = bert_embeddings.LayerNorm
        self.dropout = bert_embeddings.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num_tokens = x.shape[1]
        if num_tokens > self.position_embeddings.num_embeddings:
            raise ValueError(f"{num_tokens} visual tokens exceed the BERT max_position_embeddings "
                             f"({self.position_embeddings.num_embeddings})")
        x = x + self.token_type_embeddings.weight[0] + self.position_embeddings.weight[:num_tokens]
        return self.dropout(self.LayerNorm(x))

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """BERT's embedding of text as a second segment: word + position (from 0) + token type 1 (0 when
        the checkpoint has one type), LayerNorm, dropout. input_ids [B, L] -> [B, L, H]."""
        return self.second_segment(self.word_embeddings(input_ids), "condition")

    def second_segment(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """Token vectors x [B, L, H] (in place of word embeddings) embedded as a second segment: + position
        (from 0) + token type 1 (0 when the checkpoint has one type), LayerNorm, dropout."""
        length = x.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"{length} {what} tokens exceed the BERT max_position_embeddings "
                             f"({self.position_embeddings.num_embeddings})")
        token_type = self.token_type_embeddings.weight[min(1, self.token_type_embeddings.num_embeddings - 1)]
        return self.dropout(self.LayerNorm(x + token_type + self.position_embeddings.weight[:length]))


def _check_register_init(register_init: str, registers: int | None) -> None:
    if register_init not in REGISTER_INITS:
        raise ValueError(f"register_init must be one of {REGISTER_INITS}, got {register_init!r}")
    if register_init != "random" and not registers:
        raise ValueError(f"register_init {register_init!r} needs registers")


class TomeFormer(nn.Module):
    """BERT encoder over visual tokens with token merging between attention and MLP in every layer.

    r: tokens merged per layer, as ``parse_r`` accepts (int, per-layer list, or (r, inflection) tuple).
    class_token: position 0 is never merged. merge_mode: "mean" (plain average, the paper) or "wavg"
    (average weighted by the number of input tokens each token covers, ToMe). proportional_attention:
    add log(size) to the attention logits of each key (ToMe); off by default.

    Off by default: threshold (``parse_threshold``: a layer merges only tokens at least that similar, r its
    cap); tokens (final token count, replaces r by ``r_for_tokens``); random_tokens ((low, high): in training,
    each forward draws its final count uniformly from [low, high] with torch's global generator, so runs
    repeat from the seed); condition (keep BERT's word embeddings, frozen, to embed question tokens);
    mean_tokens (tracked thresholds for that mean final count, caps ``cap_factor`` times the fixed schedule's r,
    running average with ``threshold_momentum``; in evaluation before any training step, the fixed schedule);
    registers (that many learnable tokens, ``registers`` [R, H] drawn as BERT draws its weights, embedded as a
    second segment; never merged, not returned).
    """

    def __init__(self, bert: BertModel, r: int | list[int] | tuple[int, float], class_token: bool = True,
                 merge_mode: str = "mean", proportional_attention: bool = False,
                 threshold: float | list[float | None] | None = None, tokens: int | None = None,
                 random_tokens: tuple[int, int] | list[int] | None = None, condition: bool = False,
                 mean_tokens: int | None = None, cap_factor: float = 2.0, threshold_momentum: float = 0.05,
                 registers: int = 0):
        super().__init__()
        _check_config(bert.config)
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got '{merge_mode}'")
        self.config = bert.config
        self.embeddings = VisualEmbeddings(bert.embeddings, keep_word_embeddings=condition)
        self.encoder = nn.ModuleDict({"layer": bert.encoder.layer})
        self.class_token = class_token
        self.merge_mode = merge_mode
        self.proportional_attention = proportional_attention
        self.condition = condition
        self.tokenizer = None
        if isinstance(registers, bool) or not isinstance(registers, int) or registers < 0:
            raise ValueError(f"registers must be a non-negative int, got {registers!r}")
        self.registers = None
        if registers:
            self.registers = nn.Parameter(torch.empty(registers, self.config.hidden_size))
            nn.init.normal_(self.registers, std=self.config.initializer_range)
        if cap_factor < 1:
            raise ValueError(f"cap_factor must be at least 1, got {cap_factor}")
        if not 0 < threshold_momentum <= 1:
            raise ValueError(f"threshold_momentum must be in (0, 1], got {threshold_momentum}")
        self.cap_factor = float(cap_factor)
        self.threshold_momentum = float(threshold_momentum)
        self.set_merge_schedule(r=r, tokens=tokens, threshold=threshold, mean_tokens=mean_tokens)
        self.random_tokens = _check_random_tokens(random_tokens)
        if self.random_tokens is not None and mean_tokens is not None:
            raise ValueError("give the TomeFormer random_tokens or mean_tokens, not both")

    @classmethod
    def from_config(cls, bert_config: BertConfig, r: int | list[int] | tuple[int, float],
                    register_init: str = "random", **options) -> "TomeFormer":
        """Randomly initialised (BERT's init) from a BertConfig; ``options`` as the constructor takes them.
        ``register_init`` can only be "random" here: "empty_text" needs a checkpoint's word embeddings."""
        _check_register_init(register_init, options.get("registers"))
        if register_init == "empty_text":
            raise ValueError("register_init 'empty_text' needs model.tomeformer.bert (its word embeddings and "
                             "tokenizer)")
        return cls(BertModel(bert_config, add_pooling_layer=False), r, **options)

    @classmethod
    def from_pretrained(cls, path: str | Path, r: int | list[int] | tuple[int, float],
                        num_hidden_layers: int | None = None, dropout: float | None = None,
                        register_init: str = "random", **options) -> "TomeFormer":
        """Load a local BERT checkpoint folder (config.json + model.safetensors or pytorch_model.bin),
        optionally keeping only its first ``num_hidden_layers`` layers; ``dropout`` replaces the checkpoint's
        hidden and attention dropout probabilities (None keeps them). With ``condition`` the folder's
        tokenizer is loaded too (``self.tokenizer``). ``register_init``: "random" (BERT's init) or "empty_text":
        the registers start as the word embeddings of the tokenizer's encoding of the empty text (``[CLS]
        [SEP]`` for BERT), repeated to their number, so two of them start where the empty condition is."""
        _check_register_init(register_init, options.get("registers"))
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no BERT checkpoint at {path} (expected a folder with config.json and weights)")
        config = BertConfig.from_pretrained(path, local_files_only=True)
        if num_hidden_layers is not None:
            if not 1 <= num_hidden_layers <= config.num_hidden_layers:
                raise ValueError(f"num_hidden_layers must be in [1, {config.num_hidden_layers}] for {path}, "
                                 f"got {num_hidden_layers}")
            config.num_hidden_layers = num_hidden_layers
        if dropout is not None:
            config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
        bert, info = BertModel.from_pretrained(path, config=config, add_pooling_layer=False, local_files_only=True,
                                               output_loading_info=True)
        condition = options.get("condition", False)
        missing = [key for key in info["missing_keys"]
                   if condition or not key.startswith("embeddings.word_embeddings")]
        if missing:
            raise ValueError(f"BERT checkpoint at {path} lacks weights the TomeFormer needs: {missing}")
        model = cls(bert, r, **options)
        if condition or register_init == "empty_text":
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model.tokenizer = tokenizer if condition else None
        if register_init == "empty_text":
            ids = torch.tensor(tokenizer("")["input_ids"]).repeat(model.registers.shape[0])[:model.registers.shape[0]]
            with torch.no_grad():
                model.registers.copy_(bert.embeddings.word_embeddings.weight[ids])
        return model

    @property
    def num_layers(self) -> int:
        return len(self.encoder["layer"])

    def set_r(self, r: int | list[int] | tuple[int, float]) -> None:
        """Set the tokens merged per layer (see ``parse_r``); a final token count set before is dropped."""
        self.r_per_layer = parse_r(r, self.num_layers)
        self.target_tokens = None
        self.mean_tokens = None

    def set_merge_schedule(self, r: int | list[int] | tuple[int, float] | None = None, tokens: int | None = None,
                           threshold: float | list[float | None] | None = None,
                           mean_tokens: int | None = None) -> None:
        """Set how much each layer merges, e.g. on a loaded checkpoint before evaluating: r (``parse_r``),
        a final token count ``tokens`` (r per layer from ``r_for_tokens`` for each input length) or a mean final
        count ``mean_tokens`` (tracked thresholds, see the class), and the similarity ``threshold``
        (``parse_threshold``; None turns it off; not with mean_tokens). Give exactly one of r, tokens and
        mean_tokens. Without r, ``r_per_layer`` is None: ``merge_schedule(num_tokens)`` gives the r of each layer."""
        choices = (("r", r), ("tokens", tokens), ("mean_tokens", mean_tokens))
        given = [name for name, value in choices if value is not None]
        if len(given) != 1:
            raise ValueError(f"give the TomeFormer one of r, tokens and mean_tokens, not both or neither "
                             f"(got {given})")
        count = tokens if tokens is not None else mean_tokens
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"{given[0]} must be a positive int, got {count!r}")
        if mean_tokens is not None and threshold is not None:
            raise ValueError("mean_tokens sets the thresholds itself; give it without threshold")
        if r is not None:
            self.set_r(r)
        else:
            self.r_per_layer = None                                       # depends on the input length
            self.target_tokens, self.mean_tokens = tokens, mean_tokens
        if mean_tokens is not None and not hasattr(self, "running_thresholds"):
            self.register_buffer("running_thresholds", torch.zeros(self.num_layers))
            self.register_buffer("thresholds_tracked", torch.zeros((), dtype=torch.long))
        self.thresholds = parse_threshold(threshold, self.num_layers)

    @contextlib.contextmanager
    def merging(self, r: int | list[int] | tuple[int, float] | None = None, tokens: int | None = None,
                threshold: float | list[float | None] | None = None) -> Iterator[None]:
        """Merge by this schedule (as ``set_merge_schedule`` takes it) inside the block and by the previous
        one after, e.g. to caption one request at another r in a served model."""
        saved = self.r_per_layer, self.target_tokens, self.mean_tokens, self.thresholds
        self.set_merge_schedule(r=r, tokens=tokens, threshold=threshold)
        try:
            yield
        finally:
            self.r_per_layer, self.target_tokens, self.mean_tokens, self.thresholds = saved

    def describe_schedule(self) -> str:
        """The merge schedule in words: r per layer or the final token count, and thresholds when set."""
        if self.mean_tokens is not None:
            tracked = (f"running thresholds {[round(float(t), 4) for t in self.running_thresholds]}"
                       if self.thresholds_tracked > 0 else "no thresholds tracked yet: the fixed schedule")
            return f"{self.mean_tokens} tokens on average, caps {self.cap_factor:g} x r ({tracked})"
        words = f"r per layer {self.r_per_layer}" if self.target_tokens is None else f"{self.target_tokens} tokens"
        if self.thresholds is not None:
            words += f", thresholds {[None if t is None else round(t, 4) for t in self.thresholds]}"
        return words

    def merge_schedule(self, num_tokens: int) -> list[int]:
        """The r of each layer for inputs of ``num_tokens`` tokens (a fresh draw in training with random_tokens)."""
        target = self.target_tokens if self.mean_tokens is None else self.mean_tokens
        if self.training and self.random_tokens is not None:
            low, high = self.random_tokens
            target = int(torch.randint(low, high + 1, ()))
        if target is None:
            return self.r_per_layer
        return r_for_tokens(num_tokens, min(target, num_tokens), self.num_layers, self.class_token)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                condition: torch.Tensor | None = None,
                condition_mask: torch.Tensor | None = None) -> TomeFormerOutput:
        """x [B, N, H] projected visual tokens; attention_mask [B, N] (1 valid, 0 padding) or None.

        condition [B, L] token ids of the question (BERT tokenizer), condition_mask [B, L] (1 valid) or None;
        needs ``condition=True`` at construction. The question tokens join the visual tokens in every layer's
        self-attention and MLP but are never merged and are not returned: the visual tokens, and through them
        the keys that drive merging from the second layer on, depend on the question. This is InstructBLIP's
        instruction-aware Q-Former (instruction tokens share self-attention with the queries) applied to a
        connector whose tokens are the visual tokens themselves; it needs no new parameters beyond BERT's own
        word embeddings, unlike PuMer's text-informed pruning, which scores image tokens by cross-modal
        attention to the text and drops the low scorers outright (it sits in a fused encoder whose text
        stream is kept; here the LLM sees only the merged visual tokens, so merging keeps their content
        rather than discarding it).

        Register tokens (``registers``) take the same path as question tokens, before them when both are on.
        """
        batch, num_tokens, hidden = x.shape
        if hidden != self.config.hidden_size:
            raise ValueError(f"TomeFormer expects tokens of width {self.config.hidden_size}, got {hidden}")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != (batch, num_tokens):
                raise ValueError(f"attention_mask must have shape {(batch, num_tokens)}, "
                                 f"got {tuple(attention_mask.shape)}")
            mask = attention_mask.bool()
        text, text_mask = self._with_registers(*self._embed_condition(condition, condition_mask, batch), batch)
        x = self.embeddings(x)
        size = x.new_ones(batch, num_tokens, 1)
        source = torch.eye(num_tokens, dtype=x.dtype, device=x.device).expand(batch, num_tokens, num_tokens)
        schedule, thresholds, track = self._layer_plan(num_tokens)
        widths = []
        for index, (layer, r, threshold) in enumerate(zip(self.encoder["layer"], schedule, thresholds)):
            if text is None:
                x, keys = self._attention(layer, x, mask, size)
            else:
                x, text, keys = self._joint_attention(layer, x, mask, size, text, text_mask)
            metric = keys.mean(dim=1)
            if track is not None and r > 0:
                threshold = self._track_threshold(index, batch_threshold(metric, track[index], r, self.class_token,
                                                                         mask))
            if threshold is not None:
                if mask is None:
                    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
                extra = 2 * r
                x, size, source, mask, metric = (pad_tokens(x, extra), pad_tokens(size, extra, 1.0),
                                                 pad_tokens(source, extra), pad_tokens(mask, extra),
                                                 pad_tokens(metric, extra))
            merge, _ = bipartite_soft_matching(metric, r, self.class_token, mask, threshold)
            if self.merge_mode == "wavg":
                x, size = merge_wavg(merge, x, size)
            else:
                x, size = merge(x, mode="mean"), merge(size, mode="sum")
            source = merge_source(merge, x, source)
            if mask is not None:
                mask = merge_mask(merge, mask)
            if threshold is not None:
                keep = compact(mask)
                x, size, source = (t.gather(1, keep[..., None].expand(-1, -1, t.shape[-1])) for t in (x, size, source))
                mask = mask.gather(1, keep)
            x = layer.output(layer.intermediate(x), x)
            if text is not None and index < self.num_layers - 1:
                text = layer.output(layer.intermediate(text), text)
            widths.append(x.shape[1])
        if track is not None:
            self.thresholds_tracked += 1
        out_mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device) if mask is None else mask.long()
        return TomeFormerOutput(last_hidden_state=x, attention_mask=out_mask, source=source, tokens_per_layer=widths)

    def _layer_plan(self, num_tokens: int) -> tuple[list[int], list[float | None], list[int] | None]:
        """Per layer: r (the cap under a threshold), the threshold, and with mean_tokens in training the r each
        item merges on average (the thresholds then come from the batch)."""
        schedule = self.merge_schedule(num_tokens)
        if self.mean_tokens is None:
            return schedule, self.thresholds or [None] * self.num_layers, None
        caps = [math.ceil(self.cap_factor * r) for r in schedule]
        if self.training:
            return caps, [None] * self.num_layers, schedule
        if self.thresholds_tracked == 0:
            return schedule, [None] * self.num_layers, None
        return caps, [float(t) for t in self.running_thresholds], None

    @torch.no_grad()
    def _track_threshold(self, layer: int, threshold: float) -> float:
        """Fold a batch's threshold into layer's running average; returns the batch's, which training merges by."""
        running = self.running_thresholds
        momentum = 1.0 if self.thresholds_tracked == 0 else self.threshold_momentum
        running[layer] = (1 - momentum) * running[layer] + momentum * threshold
        return threshold

    def condition_inputs(self, texts: list[str] | None, device: torch.device,
                         max_length: int = 64) -> dict[str, torch.Tensor]:
        """Forward's ``condition`` and ``condition_mask`` for one question per item, tokenized with this
        BERT's tokenizer ([CLS] question [SEP], at most ``max_length`` tokens); {} without ``condition``."""
        if not self.condition:
            return {}
        if texts is None:
            raise ValueError("model.tomeformer.condition is on, but the samples carry no 'condition_text' "
                             "(one question per image)")
        if self.tokenizer is None:
            raise ValueError("model.tomeformer.condition: this TomeFormer has no tokenizer (load it from a BERT "
                             "checkpoint with model.tomeformer.bert)")
        tokens = self.tokenizer([texts] if isinstance(texts, str) else list(texts), return_tensors="pt",
                                padding="longest", truncation=True, max_length=max_length).to(device)
        return {"condition": tokens.input_ids, "condition_mask": tokens.attention_mask}

    def _embed_condition(self, condition: torch.Tensor | None, condition_mask: torch.Tensor | None,
                         batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Question tokens [B, L, H] and their mask [B, L] bool, or (None, None) without a condition."""
        if condition is None:
            if condition_mask is not None:
                raise ValueError("condition_mask given without condition")
            return None, None
        if not self.condition:
            raise ValueError("this TomeFormer was built without condition (model.tomeformer.condition: true)")
        if condition.dim() != 2 or condition.shape[0] != batch:
            raise ValueError(f"condition must be token ids of shape [{batch}, L], got {tuple(condition.shape)}")
        if condition_mask is None:
            condition_mask = torch.ones_like(condition)
        elif condition_mask.shape != condition.shape:
            raise ValueError(f"condition_mask must have shape {tuple(condition.shape)}, "
                             f"got {tuple(condition_mask.shape)}")
        return self.embeddings.embed_text(condition.long()), condition_mask.bool()

    def _with_registers(self, text: torch.Tensor | None, text_mask: torch.Tensor | None,
                        batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The register tokens [B, R, H] (mask all true) before the question tokens, if any; unchanged without."""
        if self.registers is None:
            return text, text_mask
        registers = self.embeddings.second_segment(self.registers.expand(batch, -1, -1), "register")
        mask = torch.ones(registers.shape[:2], dtype=torch.bool, device=registers.device)
        if text is None:
            return registers, mask
        return torch.cat([registers, text], dim=1), torch.cat([mask, text_mask], dim=1)

    def _joint_attention(self, layer: BertLayer, x: torch.Tensor, mask: torch.Tensor | None, size: torch.Tensor,
                         text: torch.Tensor,
                         text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention over [visual tokens, question tokens] -> (visual [B, T, H], question [B, L, H],
        visual keys [B, heads, T, head_dim]); question tokens count as size 1 in proportional attention."""
        tokens = x.shape[1]
        visual_mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
        joint, keys = self._attention(layer, torch.cat([x, text], dim=1), torch.cat([visual_mask, text_mask], dim=1),
                                      torch.cat([size, size.new_ones(text.shape[0], text.shape[1], 1)], dim=1))
        return joint[:, :tokens], joint[:, tokens:], keys[:, :, :tokens]

    def _attention(self, layer: BertLayer, x: torch.Tensor, mask: torch.Tensor | None,
                   size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's self-attention block on x [B, T, H] -> (output [B, T, H], keys [B, heads, T, head_dim])."""
        batch, tokens, hidden = x.shape
        heads = self.config.num_attention_heads
        projections = layer.attention.self

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, heads, hidden // heads).transpose(1, 2)

        query, key, value = (split_heads(proj(x)) for proj in (projections.query, projections.key, projections.value))
        bias = None
        if self.proportional_attention:
            bias = size.log().view(batch, 1, 1, tokens)
        if mask is not None:
            padding = torch.zeros(batch, 1, 1, tokens, dtype=x.dtype, device=x.device)
            padding.masked_fill_(~mask.view(batch, 1, 1, tokens), torch.finfo(x.dtype).min)
            bias = padding if bias is None else bias + padding
        dropout = self.config.attention_probs_dropout_prob if self.training else 0.0
        context = attention(query, key, value, attn_mask=bias, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, tokens, hidden)
        return layer.attention.output(context, x), key


def _check_random_tokens(value: tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value) or not 1 <= value[0] <= value[1]):
        raise ValueError(f"random_tokens must be [low, high] with 1 <= low <= high, got {value!r}")
    return int(value[0]), int(value[1])


def _check_config(config: BertConfig) -> None:
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"TomeFormer supports position_embedding_type 'absolute' only, "
                         f"got '{config.position_embedding_type}'")
    if config.is_decoder or config.add_cross_attention:
        raise ValueError("TomeFormer is an encoder: is_decoder and add_cross_attention must be false")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_attention_heads "
                         f"{config.num_attention_heads}")
