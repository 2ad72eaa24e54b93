"""EVLGen-Video: ``evlgen_video`` and its OPT / Vicuna model types (paper section 3.3, Tables 3-4).

Video input is ``samples["video"]`` in LAVIS's video-processor layout, ``[B, C, N, H, W]`` (the
``alpro_video_*`` processors return ``[C, N, H, W]`` per clip); the N frames of each clip go through
the frozen ViT as a batch of B*N images. ``model.frame_aggregation`` chooses how the frames become
one visual prompt:

* ``temporal+mean`` (the paper): a :class:`~lavis_evlgen.models.temporal.TemporalContextualizer` in
  every ViT block, then the frame features are averaged, then TomeFormer;
* ``mean`` (baseline): the plain frozen ViT, frame features averaged, then TomeFormer;
* ``concat`` (baseline, as InstructBLIP-style models use image connectors on video): every frame
  through TomeFormer separately, the N soft prompts concatenated for the LLM.

``samples["image"]`` still works and gives exactly the image model's output (the temporal modules
only act on clips). Initialisation: ``model.image_checkpoint`` names an EVLGen-Image checkpoint
loaded into the image parts before the temporal modules are added (their gates start at zero, so
the video model starts as that image model); ``model.pretrained`` / ``model.finetuned`` name
EVLGen-Video checkpoints (temporal modules included), ours or the authors' (see ``loading``).
``model.temporal.scale`` chooses the attention scale of the temporal modules (see ``temporal``).
Trainable: the temporal modules and everything EVLGen-Image trains; the ViT and the LLM stay frozen.

Self-critical sequence training needs log-probabilities of sampled captions: see
:class:`~lavis_evlgen.models.sequence_scoring.SequenceScoringMixin`.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from lavis.common.registry import registry
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lavis_evlgen.models.evlgen import EVLGen
from lavis_evlgen.models.loading import EVLGEN_VIDEO_KEYS
from lavis_evlgen.models.model_types import all_family_types
from lavis_evlgen.models.sequence_scoring import SequenceScoringMixin
from lavis_evlgen.models.temporal import TEMPORAL_SCALES, FrameCount, add_temporal_modules

logger = logging.getLogger(__name__)

FRAME_AGGREGATIONS = ("temporal+mean", "mean", "concat")


OPT_TYPES = {
    "video_opt2.7b": "models/evlgen_video_opt/video_opt2.7b.yaml",
    "tiny": "models/evlgen_video_opt/tiny.yaml",
}
VICUNA_TYPES = {
    "video_vicuna7b": "models/evlgen_video_vicuna/video_vicuna7b.yaml",
    "embedded": "models/evlgen_video_vicuna/embedded.yaml",
    "tiny": "models/evlgen_video_vicuna/tiny.yaml",
}


@registry.register_model("evlgen_video")
class EVLGenVideo(SequenceScoringMixin, EVLGen):
    """EVLGen on clips, for any LLM family; ``evlgen_video_opt`` / ``evlgen_video_vicuna`` name its types."""

    TRAINABLE_PARTS = EVLGen.TRAINABLE_PARTS + ("temporal",)
    KEY_MAP = EVLGEN_VIDEO_KEYS
    DEFAULT_MODEL_TYPE = "video_opt2.7b"
    PRETRAINED_MODEL_CONFIG_DICT = all_family_types(OPT_TYPES, VICUNA_TYPES)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.frame_aggregation = "mean"
        self.temporal = nn.ModuleList()
        self.frame_count = FrameCount()

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "EVLGenVideo":
        """The image model from ``cfg`` (with ``model.image_checkpoint``), then the video parts."""
        aggregation = cfg.get("frame_aggregation", "temporal+mean")
        if aggregation not in FRAME_AGGREGATIONS:
            raise ValueError(f"model.frame_aggregation: expected one of {list(FRAME_AGGREGATIONS)}, "
                             f"got '{aggregation}'")
        image_cfg = cfg.copy()
        OmegaConf.set_struct(image_cfg, False)
        image_cfg.update(pretrained=None, finetuned=None, load_pretrained=False, load_finetuned=False)
        model = super().from_config(image_cfg)
        if cfg.get("image_checkpoint"):
            model.load_from_pretrained(cfg.image_checkpoint, key="model.image_checkpoint")
        temporal = cfg.get("temporal") or {}
        scale = temporal.get("scale", "head_dim")
        if scale not in TEMPORAL_SCALES:
            raise ValueError(f"model.temporal.scale: expected one of {list(TEMPORAL_SCALES)}, got '{scale}'")
        model.set_frame_aggregation(aggregation, num_heads=int(temporal.get("num_heads", 8)),
                                    qk_dim=int(temporal.get("qk_dim", 256)),
                                    frame_positions=int(temporal.get("frame_positions") or 0), scale=scale)
        model.load_checkpoint_from_config(cfg)
        return model

    def set_frame_aggregation(self, aggregation: str, num_heads: int = 8, qk_dim: int = 256,
                              frame_positions: int = 0, scale: str = "head_dim") -> None:
        """Choose the aggregation; ``temporal+mean`` wraps the ViT's blocks with fresh temporal modules."""
        if len(self.temporal):
            raise ValueError("the frame aggregation is set once, when the model is built")
        if aggregation != "temporal+mean" and frame_positions:
            raise ValueError("model.temporal.frame_positions: only used with frame_aggregation 'temporal+mean'")
        if aggregation == "temporal+mean":
            if self.visual_encoder is None:
                raise ValueError("model.use_features: frame_aggregation 'temporal+mean' changes the ViT's "
                                 "features, so it needs the ViT itself")
            self.temporal = add_temporal_modules(self.visual_encoder, self.frame_count, num_heads, qk_dim,
                                                 frame_positions, scale)
            logger.info("temporal modules in %d ViT blocks: %.2fM trainable parameters", len(self.temporal),
                        sum(p.numel() for p in self.temporal.parameters()) / 1e6)
        self.frame_aggregation = aggregation

    # ------------------------------------------------------------------ forward
    def encode_image(self, samples: dict[str, Any], return_source: bool = False):
        """Visual soft prompt for ``samples["video"]`` [B, C, N, H, W]; images as EVLGen-Image does.

        ``concat`` gives ``[B, N*T, D_llm]`` (the frames' prompts one after another) and, if asked,
        sources ``[B, N, T, L]``; the averaging modes give ``[B, T, D_llm]`` and ``[B, T, L]``.
        ``samples["condition_text"]`` (one question per clip) conditions every frame's merging.
        """
        if "video" not in samples:
            return super().encode_image(samples, return_source)
        feats = self.frame_features(samples["video"])
        clips, frames = feats.shape[:2]
        questions = samples.get("condition_text")
        if self.frame_aggregation != "concat":
            return super().encode_image({"image_features": feats.mean(dim=1), "condition_text": questions},
                                        return_source)
        if questions is not None:  # one question per clip, asked of each of its frames
            questions = [q for q in ([questions] if isinstance(questions, str) else questions) for _ in range(frames)]
        out = super().encode_image({"image_features": feats.flatten(0, 1), "condition_text": questions},
                                   return_source)
        embeds, atts = out[0].view(clips, -1, out[0].size(-1)), out[1].view(clips, -1)
        if not return_source:
            return embeds, atts
        return embeds, atts, out[2].view(clips, frames, *out[2].shape[1:])

    def vision_features(self, image: torch.Tensor) -> torch.Tensor:
        """Frozen ViT tokens of single images: the temporal modules stay out (EVLGen-Image's features)."""
        self.frame_count.frames = None
        return super().vision_features(image)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """ViT tokens of every frame, ``[B, N, L, D_vit]`` in fp32 (through the temporal modules if any)."""
        if video.dim() != 5:
            raise ValueError(f"samples['video']: expected [B, C, N, H, W] (LAVIS video layout), "
                             f"got shape {tuple(video.shape)}")
        if self.visual_encoder is None:
            raise ValueError("model.use_features: video input needs the ViT (use_features is for image features)")
        clips, _, frames = video.shape[:3]
        images = video.transpose(1, 2).flatten(0, 1).to(self.vision_dtype)
        temporal = len(self.temporal) > 0
        # Left set after the call: a ViT with gradient checkpointing re-runs its blocks during backward.
        self.frame_count.frames = frames if temporal else None
        with torch.set_grad_enabled(torch.is_grad_enabled() and temporal):
            feats = self.visual_encoder(images).float()
        return feats.view(clips, frames, *feats.shape[1:])


@registry.register_model("evlgen_video_opt")
class EVLGenVideoOPT(EVLGenVideo):
    """EVLGen-Video's model types with a frozen OPT (the paper's video setting: EVA-ViT-g + OPT-2.7b)."""

    DEFAULT_MODEL_TYPE = "video_opt2.7b"
    PRETRAINED_MODEL_CONFIG_DICT = OPT_TYPES


@registry.register_model("evlgen_video_vicuna")
class EVLGenVideoVicuna(EVLGenVideo):
    """EVLGen-Video's model types with a frozen Llama-architecture LLM (Vicuna-7b, or the embedded SmolLM2)."""

    DEFAULT_MODEL_TYPE = "video_vicuna7b"
    PRETRAINED_MODEL_CONFIG_DICT = VICUNA_TYPES
