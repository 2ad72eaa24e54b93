"""Frozen vision encoders, chosen by name from a registry (not an if-chain).

Each factory takes the ``model.vision`` config and returns an ``nn.Module`` whose ``forward(image)``
gives every token ``[B, N, D]`` (CLS first) and whose ``num_features`` is D. ``weights: null``
builds the architecture with random weights (tests, skeletons on the meta device); a path loads a
local file. EVA-ViT-g and CLIP-L are LAVIS's own classes; their weights are read here (``weights_only``,
every tensor of the encoder required, the file's extra blocks left out), not by LAVIS's download code.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Callable, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lavis_evlgen.models.weights import read_state_dict, require_weights

logger = logging.getLogger(__name__)

VisionFactory = Callable[[DictConfig], nn.Module]
VISION_ENCODERS: dict[str, VisionFactory] = {}


def register_vision_encoder(name: str) -> Callable[[VisionFactory], VisionFactory]:
    """Decorator adding a factory to :data:`VISION_ENCODERS`."""
    def wrap(factory: VisionFactory) -> VisionFactory:
        VISION_ENCODERS[name] = factory
        return factory
    return wrap


def build_vision_encoder(cfg: DictConfig) -> nn.Module:
    """Build the encoder named by ``cfg.name``; unknown names list the registered ones."""
    name = cfg.get("name")
    if name not in VISION_ENCODERS:
        raise ValueError(f"model.vision.name: unknown vision encoder '{name}'; "
                         f"registered: {sorted(VISION_ENCODERS)}")
    return VISION_ENCODERS[name](cfg)


# File names LAVIS's ViT factories download into timm's hub cache ("LAVIS's cache").
LAVIS_CACHE_FILES = {"eva_clip_g": "eva_vit_g.pth", "clip_L": "clip_vit_L.pth"}


def _weights(cfg: DictConfig) -> Optional[str]:
    """The configured local weights, else the file LAVIS would have cached, else None (random)."""
    path = cfg.get("weights")
    if path in (None, ""):
        return None
    if not os.path.exists(path) and cfg.name in LAVIS_CACHE_FILES:
        from timm.models.hub import get_cache_dir

        cached = os.path.join(get_cache_dir(), LAVIS_CACHE_FILES[cfg.name])
        if os.path.exists(cached):
            return cached
    return require_weights(path, "model.vision.weights")


@contextlib.contextmanager
def _random_weights(module) -> Iterator[None]:
    """Let a LAVIS ViT factory build its encoder with random weights (it would download and load a file)."""
    original = module.download_cached_file
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty.pth")
        torch.save({}, empty)
        module.download_cached_file = lambda *args, **kwargs: empty
        try:
            yield
        finally:
            module.download_cached_file = original


def _load_vit_weights(encoder: nn.Module, cfg: DictConfig, interpolate_pos_embed) -> nn.Module:
    """Load ``model.vision.weights`` (or LAVIS's cached file) into a LAVIS ViT as LAVIS does (position
    embeddings interpolated to the image size), but every tensor of the encoder must be in the file."""
    path = _weights(cfg)
    if path is None:
        return encoder
    state = read_state_dict(path, "model.vision.weights")
    interpolate_pos_embed(encoder, state)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"model.vision.weights: {path} lacks {len(missing)} tensors of the "
                         f"{cfg.name} encoder: {missing[:8]}")
    logger.info("model.vision.weights: %s loaded; %d tensors of the file are not part of the encoder",
                path, len(unexpected))
    return encoder


@register_vision_encoder("eva_clip_g")
def eva_clip_g(cfg: DictConfig) -> nn.Module:
    """EVA-CLIP ViT-g/14 (39 blocks, width 1408) as used by BLIP-2: 257 tokens at 224 px."""
    from lavis.models import eva_vit

    with _random_weights(eva_vit):
        encoder = eva_vit.create_eva_vit_g(cfg.get("image_size", 224), cfg.get("drop_path_rate", 0.0),
                                           cfg.get("use_grad_checkpoint", False), "fp32")
    return _load_vit_weights(encoder, cfg, eva_vit.interpolate_pos_embed)


@register_vision_encoder("clip_L")
def clip_l(cfg: DictConfig) -> nn.Module:
    """OpenAI CLIP ViT-L/14 (width 1024) cut to its first ``model.vision.depth`` residual blocks: 257
    tokens at 224 px. The depth is required: the EVLGen authors' fork builds 23 (all but the last of 24,
    as BLIP-2 drops EVA-ViT-g's last block), LAVIS 1.0.2's ``create_clip_vit_L`` builds 21."""
    from lavis.models import clip_vit

    depth = cfg.get("depth")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 24:
        raise ValueError(f"model.vision.depth: CLIP-L needs its number of blocks, an integer in [1, 24] "
                         f"(23: the EVLGen release; 21: LAVIS 1.0.2), got {depth!r}")
    # LAVIS's VisionTransformer builds layers - 1 residual blocks.
    encoder = clip_vit.VisionTransformer(input_resolution=cfg.get("image_size", 224), patch_size=14, width=1024,
                                         layers=depth + 1, heads=16,
                                         use_grad_checkpointing=cfg.get("use_grad_checkpoint", False))
    if len(encoder.transformer.resblocks) != depth:
        raise RuntimeError(f"LAVIS's CLIP VisionTransformer built {len(encoder.transformer.resblocks)} blocks "
                           f"where {depth} were asked for")
    return _load_vit_weights(encoder, cfg, clip_vit.interpolate_pos_embed)


@register_vision_encoder("tiny_vit")
def tiny_vit(cfg: DictConfig) -> nn.Module:
    """A small random ViT (LAVIS's EVA ViT class) for tests and the ``tiny`` model type."""
    from lavis.models.eva_vit import VisionTransformer

    return VisionTransformer(
        img_size=cfg.get("image_size", 32), patch_size=cfg.get("patch_size", 8),
        embed_dim=cfg.get("width", 32), depth=cfg.get("depth", 2), num_heads=cfg.get("heads", 2),
        mlp_ratio=2.0, qkv_bias=True, use_mean_pooling=False,
        norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6),
    )


class HFVisionEncoder(nn.Module):
    """A transformers vision backbone (e.g. Dinov2Model) returning every token of its last kept block.

    ``num_layers`` keeps only the first blocks, as BLIP-2 drops EVA-ViT-g's last block: the output is then
    the residual stream after block ``num_layers`` without the backbone's final norm (``ln_vision`` follows).
    """

    def __init__(self, backbone: nn.Module, num_layers: Optional[int] = None):
        super().__init__()
        depth = backbone.config.num_hidden_layers
        if num_layers is not None:
            if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= depth:
                raise ValueError(f"model.vision.num_layers: expected an integer in [1, {depth}], got {num_layers!r}")
            if num_layers < depth:
                backbone.encoder.layer = backbone.encoder.layer[:num_layers]
                backbone.config.num_hidden_layers = num_layers
                backbone.layernorm = nn.Identity()
        self.backbone = backbone
        self.num_features = backbone.config.hidden_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=image).last_hidden_state


@register_vision_encoder("dinov2")
def dinov2(cfg: DictConfig) -> nn.Module:
    """DINOv2 through transformers' Dinov2Model (the embedded ViT-S/14: 257 tokens at 224 px)."""
    from transformers import Dinov2Config, Dinov2Model

    path = _weights(cfg)
    if path is None:
        settings = OmegaConf.to_container(cfg.config, resolve=True) if cfg.get("config") else {}
        backbone = Dinov2Model(Dinov2Config(**settings))
    else:
        backbone = Dinov2Model.from_pretrained(path, local_files_only=True)
    return HFVisionEncoder(backbone, cfg.get("num_layers"))
