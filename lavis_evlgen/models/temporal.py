"""Temporal attentive soft token contextualizing (EVLGen-Video, paper section 3.3, Eqs. 4-7).

A clip of N frames goes through the frozen ViT as a batch of B*N images. Inside every ViT block,
between the attention and the MLP, a :class:`TemporalContextualizer` lets each token look at the
same token position in the clip's other frames:

* Eq. 4: the block's tokens ``X`` of shape [B*N, L, D] are regrouped per token position, [B*L, N, D];
* Eq. 5: multi-head queries ``Q = X W_q`` and keys ``K = X W_k``, projected to ``qk_dim`` channels
  split into H heads;
* Eq. 6: attention over frames ``A = softmax(Q K^T / sqrt(qk_dim / H))`` per head, and the weighted
  sum of the frame tokens ``C = A X`` (the tokens themselves are the values, split into H heads of
  D/H channels);
* Eq. 7: ``X + alpha * C`` with a learnable scalar gate ``alpha`` initialised at zero.

Defaults follow the authors' release: H = 8 heads and ``qk_dim`` = 256 in every block (EVA-ViT-g:
39 x 721,409 = 28.1M trainable parameters). The scores are scaled by ``1 / sqrt(qk_dim / H)``, the head
dimension (Eq. 6, ``scale: head_dim``); the release scales by ``1 / sqrt(qk_dim)`` (``scale: qk_dim``,
1/16 instead of 1/sqrt(32) with the defaults), which the model types loading its weights use.

With ``alpha = 0`` every block computes exactly what the frozen block computes, so the video model
starts as the image model it is initialised from.

Beyond the paper: followed by an average over frames (the ``temporal+mean`` aggregation) the
module is blind to frame order, since permuting the frames permutes its outputs. An optional learned
frame-position embedding ``P`` (``num_frame_positions > 0``, off by default) is added to the frame
tokens inside the module, ``X + alpha * A(X + P) (X + P)``: the attention weights depend on where each
frame sits in the clip, and the context carries the frame positions it drew from, so a token can
record when the content it attends to was there (the direction demo in ``projects/evlgen_video``
shows this captions direction where the paper's module cannot). The residual stays ``X``, so the
module is still the identity at initialisation.

The blocks are not copied: each supported block family gets a thin :class:`TemporalBlock` wrapper
that calls the block's own attention and MLP parts in order, with the contextualizer in between.
The contextualizers are owned by the model (``EVLGenVideo.temporal``), not by the frozen
encoder; the wrappers only call them. All wrapped blocks of one encoder share a :class:`FrameCount`
telling them the clip length of the current forward pass (``None``: images, no contextualizing).
"""
from __future__ import annotations

from typing import Optional

import torch
from lavis.models.clip_vit import ResidualAttentionBlock
from lavis.models.eva_vit import Block as EvaBlock
from torch import nn
from transformers.models.dinov2.modeling_dinov2 import Dinov2Layer

# Attention scale of the contextualizer: 1 / sqrt of the head's query width (Eq. 6) or of all heads' (release).
TEMPORAL_SCALES = ("head_dim", "qk_dim")


class TemporalContextualizer(nn.Module):
    """Gated multi-head attention over the frames of a clip, per token position (Eqs. 4-7)."""

    def __init__(self, dim: int, num_heads: int = 8, qk_dim: int = 256, num_frame_positions: int = 0,
                 scale: str = "head_dim"):
        super().__init__()
        if dim % num_heads or qk_dim % num_heads:
            raise ValueError(f"model.temporal.num_heads: {num_heads} heads must divide the ViT width {dim} "
                             f"and model.temporal.qk_dim {qk_dim}")
        if scale not in TEMPORAL_SCALES:
            raise ValueError(f"model.temporal.scale: expected one of {list(TEMPORAL_SCALES)}, got '{scale}'")
        self.num_heads = num_heads
        self.scale = (qk_dim if scale == "qk_dim" else qk_dim // num_heads) ** -0.5
        self.query = nn.Linear(dim, qk_dim)
        self.key = nn.Linear(dim, qk_dim)
        self.gate = nn.Parameter(torch.zeros(()))
        self.frame_position: Optional[nn.Parameter] = None
        if num_frame_positions:
            self.frame_position = nn.Parameter(torch.empty(num_frame_positions, dim))
            nn.init.trunc_normal_(self.frame_position, std=0.02)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``x`` [B*N, L, D], frames of a clip consecutive -> ``x + gate * context``, same shape and dtype."""
        rows, length, dim = x.shape
        if rows % num_frames:
            raise ValueError(f"temporal contextualizer: {rows} frames are not a whole number of "
                             f"{num_frames}-frame clips")
        clips = rows // num_frames
        dtype = self.query.weight.dtype
        tokens = x.to(dtype).view(clips, num_frames, length, dim).transpose(1, 2).reshape(-1, num_frames, dim)
        if self.frame_position is not None:
            if num_frames > self.frame_position.shape[0]:
                raise ValueError(f"model.temporal.frame_positions: {self.frame_position.shape[0]} frame positions, "
                                 f"but the clip has {num_frames} frames")
            tokens = tokens + self.frame_position[:num_frames]

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B*L, N, C] -> [B*L, H, N, C/H]
            return t.view(t.shape[0], num_frames, self.num_heads, -1).transpose(1, 2)

        query, key, value = heads(self.query(tokens)), heads(self.key(tokens)), heads(tokens)
        weights = torch.softmax(query @ key.transpose(-2, -1) * self.scale, dim=-1)
        context = (weights @ value).transpose(1, 2).reshape(clips, length, num_frames, dim)
        context = context.transpose(1, 2).reshape(rows, length, dim)
        return x + (self.gate * context).to(x.dtype)


class FrameCount:
    """Clip length of the current forward pass, shared by an encoder's wrapped blocks (None: images)."""

    def __init__(self) -> None:
        self.frames: Optional[int] = None


class TemporalBlock(nn.Module):
    """A frozen ViT block with a contextualizer called between its attention and its MLP parts.

    Subclasses name the block family (``BLOCK``) and say how to run its two residual parts; the
    contextualizer is held as a plain attribute so that its parameters belong to the model, not to
    the frozen encoder.
    """

    BLOCK: type = nn.Module

    def __init__(self, block: nn.Module, contextualizer: TemporalContextualizer, frame_count: FrameCount):
        super().__init__()
        self.block = block
        object.__setattr__(self, "contextualizer", contextualizer)
        object.__setattr__(self, "frame_count", frame_count)

    @staticmethod
    def width(block: nn.Module) -> int:
        """The block's token width."""
        raise NotImplementedError

    def contextualize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the contextualizer to batch-first tokens [B*N, L, D] when a clip is running."""
        frames = self.frame_count.frames
        return x if frames is None else self.contextualizer(x, frames)


class EvaTemporalBlock(TemporalBlock):
    """LAVIS's EVA ViT block (EVA-ViT-g and the ``tiny_vit`` test encoder)."""

    BLOCK = EvaBlock

    @staticmethod
    def width(block: nn.Module) -> int:
        return block.norm1.normalized_shape[0]

    def forward(self, x: torch.Tensor, rel_pos_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        b = self.block
        attended = b.attn(b.norm1(x), rel_pos_bias=rel_pos_bias)
        x = x + b.drop_path(attended if b.gamma_1 is None else b.gamma_1 * attended)
        x = self.contextualize(x)
        mixed = b.mlp(b.norm2(x))
        return x + b.drop_path(mixed if b.gamma_2 is None else b.gamma_2 * mixed)


class ClipTemporalBlock(TemporalBlock):
    """LAVIS's CLIP ViT block; its tokens run sequence-first, [L, B*N, D]."""

    BLOCK = ResidualAttentionBlock

    @staticmethod
    def width(block: nn.Module) -> int:
        return block.attn.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        x = x + b.attention(b.ln_1(x))
        x = self.contextualize(x.transpose(0, 1)).transpose(0, 1)
        return x + b.mlp(b.ln_2(x))


class Dinov2TemporalBlock(TemporalBlock):
    """transformers' Dinov2Layer (the embedded DINOv2 ViT-S/14); returns its output tuple."""

    BLOCK = Dinov2Layer

    @staticmethod
    def width(block: nn.Module) -> int:
        return block.norm1.normalized_shape[0]

    def forward(self, hidden_states: torch.Tensor, head_mask: Optional[torch.Tensor] = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, ...]:
        b = self.block
        attention = b.attention(b.norm1(hidden_states), head_mask, output_attentions=output_attentions)
        hidden_states = b.drop_path(b.layer_scale1(attention[0])) + hidden_states
        hidden_states = self.contextualize(hidden_states)
        output = b.drop_path(b.layer_scale2(b.mlp(b.norm2(hidden_states)))) + hidden_states
        return (output,) + tuple(attention[1:])


BLOCK_WRAPPERS: tuple[type[TemporalBlock], ...] = (EvaTemporalBlock, ClipTemporalBlock, Dinov2TemporalBlock)


def _wrapper_for(module: nn.Module) -> Optional[type[TemporalBlock]]:
    return next((w for w in BLOCK_WRAPPERS if type(module) is w.BLOCK), None)


def add_temporal_modules(encoder: nn.Module, frame_count: FrameCount, num_heads: int = 8, qk_dim: int = 256,
                         num_frame_positions: int = 0, scale: str = "head_dim") -> nn.ModuleList:
    """Wrap every supported block of ``encoder`` in place; return the new contextualizers in block order.

    Raises ValueError if the encoder has no block of a supported family or was wrapped already.
    """
    contextualizers: list[TemporalContextualizer] = []

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, TemporalBlock):
                raise ValueError("the vision encoder already has temporal modules")
            wrapper = _wrapper_for(child)
            if wrapper is None:
                visit(child)
                continue
            contextualizer = TemporalContextualizer(wrapper.width(child), num_heads, qk_dim, num_frame_positions,
                                                    scale)
            setattr(parent, name, wrapper(child, contextualizer, frame_count))
            contextualizers.append(contextualizer)

    visit(encoder)
    if not contextualizers:
        known = ", ".join(f"{w.BLOCK.__module__}.{w.BLOCK.__name__}" for w in BLOCK_WRAPPERS)
        raise ValueError(f"model.vision: {type(encoder).__name__} has no ViT block of a supported family ({known})")
    return nn.ModuleList(contextualizers)

