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
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

from lavis_evlgen.common.precision import attention
from lavis_evlgen.models.tome import (
    bipartite_soft_matching,
    merge_mask,
    merge_source,
    merge_wavg,
    parse_r,
    token_counts,
)

MERGE_MODES = ("mean", "wavg")


@dataclass
class TomeFormerOutput:
    """last_hidden_state [B, T, H]; attention_mask [B, T] long (1 valid); source [B, T, N] 0/1 in the
    hidden state's dtype (input tokens covered by each output token); tokens_per_layer: T after each layer."""

    last_hidden_state: torch.Tensor
    attention_mask: torch.Tensor
    source: torch.Tensor
    tokens_per_layer: list[int]


class VisualEmbeddings(nn.Module):
    """BERT's embedding block for visual tokens given as inputs_embeds: adds the token-type-0 and position
    embeddings, then LayerNorm and dropout (BertEmbeddings without word embeddings)."""

    def __init__(self, bert_embeddings: BertEmbeddings):
        super().__init__()
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


class TomeFormer(nn.Module):
    """BERT encoder over visual tokens with token merging between attention and MLP in every layer.

    r: tokens merged per layer, as ``parse_r`` accepts (int, per-layer list, or (r, inflection) tuple).
    class_token: position 0 is never merged. merge_mode: "mean" (plain average, the paper) or "wavg"
    (average weighted by the number of input tokens each token covers, ToMe). proportional_attention:
    add log(size) to the attention logits of each key (ToMe); off by default.
    """

    def __init__(self, bert: BertModel, r: int | list[int] | tuple[int, float], class_token: bool = True,
                 merge_mode: str = "mean", proportional_attention: bool = False):
        super().__init__()
        _check_config(bert.config)
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got '{merge_mode}'")
        self.config = bert.config
        self.embeddings = VisualEmbeddings(bert.embeddings)
        self.encoder = nn.ModuleDict({"layer": bert.encoder.layer})
        self.class_token = class_token
        self.merge_mode = merge_mode
        self.proportional_attention = proportional_attention
        self.set_r(r)

    @classmethod
    def from_config(cls, bert_config: BertConfig, r: int | list[int] | tuple[int, float], class_token: bool = True,
                    merge_mode: str = "mean", proportional_attention: bool = False) -> "TomeFormer":
        """Randomly initialised (BERT's init) from a BertConfig."""
        return cls(BertModel(bert_config, add_pooling_layer=False), r, class_token, merge_mode,
                   proportional_attention)

    @classmethod
    def from_pretrained(cls, path: str | Path, r: int | list[int] | tuple[int, float],
                        num_hidden_layers: int | None = None, class_token: bool = True, merge_mode: str = "mean",
                        proportional_attention: bool = False, dropout: float | None = None) -> "TomeFormer":
        """Load a local BERT checkpoint folder (config.json + model.safetensors or pytorch_model.bin),
        optionally keeping only its first ``num_hidden_layers`` layers; ``dropout`` replaces the checkpoint's
        hidden and attention dropout probabilities (None keeps them)."""
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
        missing = [key for key in info["missing_keys"] if not key.startswith("embeddings.word_embeddings")]
        if missing:
            raise ValueError(f"BERT checkpoint at {path} lacks weights the TomeFormer needs: {missing}")
        return cls(bert, r, class_token, merge_mode, proportional_attention)

    @property
    def num_layers(self) -> int:
        return len(self.encoder["layer"])

    def set_r(self, r: int | list[int] | tuple[int, float]) -> None:
        """Set the tokens merged per layer (see ``parse_r``)."""
        self.r_per_layer = parse_r(r, self.num_layers)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TomeFormerOutput:
        """x [B, N, H] projected visual tokens; attention_mask [B, N] (1 valid, 0 padding) or None."""
        batch, num_tokens, hidden = x.shape
        if hidden != self.config.hidden_size:
            raise ValueError(f"TomeFormer expects tokens of width {self.config.hidden_size}, got {hidden}")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != (batch, num_tokens):
                raise ValueError(f"attention_mask must have shape {(batch, num_tokens)}, "
                                 f"got {tuple(attention_mask.shape)}")
            mask = attention_mask.bool()
        x = self.embeddings(x)
        size = x.new_ones(batch, num_tokens, 1)
        source = torch.eye(num_tokens, dtype=x.dtype, device=x.device).expand(batch, num_tokens, num_tokens)
        for layer, r in zip(self.encoder["layer"], self.r_per_layer):
            x, keys = self._attention(layer, x, mask, size)
            merge, _ = bipartite_soft_matching(keys.mean(dim=1), r, self.class_token, mask)
            if self.merge_mode == "wavg":
                x, size = merge_wavg(merge, x, size)
            else:
                x, size = merge(x, mode="mean"), merge(size, mode="sum")
            source = merge_source(merge, x, source)
            if mask is not None:
                mask = merge_mask(merge, mask)
            x = layer.output(layer.intermediate(x), x)
        out_mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device) if mask is None else mask.long()
        return TomeFormerOutput(last_hidden_state=x, attention_mask=out_mask, source=source,
                                tokens_per_layer=token_counts(num_tokens, self.r_per_layer, self.class_token))

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


def _check_config(config: BertConfig) -> None:
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"TomeFormer supports position_embedding_type 'absolute' only, "
                         f"got '{config.position_embedding_type}'")
    if config.is_decoder or config.add_cross_attention:
        raise ValueError("TomeFormer is an encoder: is_decoder and add_cross_attention must be false")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_attention_heads "
                         f"{config.num_attention_heads}")
