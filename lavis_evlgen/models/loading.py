"""Trained weights into a model: our checkpoints, the EVLGen authors' release and LAVIS's BLIP-2 files,
through one function with the key names as data.

Both runners (LAVIS's and ours) save ``model.state_dict()`` less the frozen parameters, so a file holds
every trainable tensor and every persistent buffer, frozen parts' buffers included (Vicuna's 32
``rotary_emb.inv_freq`` in the authors' files). A :class:`KeyMap` says how a release's names become ours
and which keys are left out: frozen parts and options we do not build. Everything trainable must then be
in the file with our shape, and nothing may be left over; otherwise one error names the config key, the
file, and the missing, unexpected and mis-shaped keys. What is left out is logged in one line, by prefix
and count.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import nn

from lavis_evlgen.models.weights import read_state_dict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyMap:
    """How a checkpoint's keys become the model's.

    ``renames``: ``(pattern, replacement)`` pairs; the first pattern matching the start of a key replaces
    that start (``re`` syntax, groups allowed). ``left_out``: keys not loaded, applied to keys no rename
    matched; an entry ending in "." is a prefix, any other an exact key.
    """

    renames: tuple[tuple[str, str], ...] = ()
    left_out: tuple[str, ...] = ()

    def _left_out_by(self, key: str) -> Optional[str]:
        return next((e for e in self.left_out if (key.startswith(e) if e.endswith(".") else key == e)), None)

    def apply(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Counter]:
        """The renamed state dict and a count of the keys left out, per ``left_out`` entry."""
        mapped, left_out = {}, Counter()
        for key, value in state.items():
            for pattern, replacement in self.renames:
                match = re.match(pattern, key)
                if match:
                    mapped[match.expand(replacement) + key[match.end():]] = value
                    break
            else:
                entry = self._left_out_by(key)
                if entry is None:
                    mapped[key] = value
                else:
                    left_out[entry] += 1
        return mapped, left_out


# Frozen parts under the names of both EVLGen code bases and LAVIS's BLIP-2.
FROZEN_PARTS = ("visual_encoder.", "llm.", "llm_model.", "opt_model.")
# The authors' optional image-text contrastive loss (``beta > 0``; 0 in every released config).
AUTHORS_ITC = ("temp", "vision_proj.", "text_proj.", "SimCSE.")
AUTHORS_IMAGE_RENAMES = (
    (r"VLconnector\.", "tomeformer."),
    (r"VL_proj\.", "proj1."),
    (r"opt_proj\.", "proj2."),
    (r"llm_proj\.", "proj2."),
)
# The authors put the temporal module inside every ViT block; ours are owned by the model, gate = alpha.
AUTHORS_VIDEO_RENAMES = (
    (r"visual_encoder\.blocks\.(\d+)\.temporal_merge\.alpha$", r"temporal.\1.gate"),
    (r"visual_encoder\.blocks\.(\d+)\.temporal_merge\.", r"temporal.\1."),
)

EVLGEN_KEYS = KeyMap(renames=AUTHORS_IMAGE_RENAMES, left_out=FROZEN_PARTS + AUTHORS_ITC)
EVLGEN_VIDEO_KEYS = KeyMap(renames=AUTHORS_VIDEO_RENAMES + AUTHORS_IMAGE_RENAMES,
                           left_out=FROZEN_PARTS + AUTHORS_ITC)
# LAVIS's BLIP-2 files and ours use the same names.
BLIP2_KEYS = KeyMap(left_out=FROZEN_PARTS)


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], key: str, source: str,
                   key_map: KeyMap) -> dict[str, torch.Tensor]:
    """``state`` renamed through ``key_map``, checked against ``model``; logs what is left out.

    Raises ValueError naming ``key``, ``source`` and the offending keys when a trainable parameter is
    missing, a key is unknown to the model, or a shape differs.
    """
    mapped, left_out = key_map.apply(state)
    own = model.state_dict()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in mapped]
    unexpected = [k for k in mapped if k not in own]
    mis_shaped = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in mapped.items()
                  if k in own and v.shape != own[k].shape]
    if missing or unexpected or mis_shaped:
        def listed(keys: list[str]) -> str:
            return f"{len(keys)} {keys[:8]}{' ...' if len(keys) > 8 else ''}"

        raise ValueError(f"config key '{key}': {source} does not fit {type(model).__name__}: missing trainable "
                         f"{listed(missing)}, unexpected {listed(unexpected)}, other shape {listed(mis_shaped)}")
    if left_out:
        logger.info("%s: left out of %s: %s", key, source,
                    ", ".join(f"{e}{'*' if e.endswith('.') else ''} ({n})" for e, n in left_out.items()))
    return mapped


def load_weights(model: nn.Module, path: Optional[str], key: str, key_map: KeyMap) -> None:
    """Load the checkpoint at ``path`` (the value of config key ``key``) into ``model`` through ``key_map``
    (see :func:`fit_state_dict`)."""
    mapped = fit_state_dict(model, read_state_dict(path, key), key, str(path), key_map)
    model.load_state_dict(mapped, strict=False)
    logger.info("%s: loaded %d tensors from %s", key, len(mapped), path)


def load_from_config(model: nn.Module, cfg: DictConfig, key_map: KeyMap) -> None:
    """LAVIS's convention: ``load_finetuned`` loads ``finetuned``, otherwise ``load_pretrained`` loads
    ``pretrained``. Each flag defaults to whether its path is set (LAVIS defaults both to true)."""
    if cfg.get("load_finetuned", bool(cfg.get("finetuned"))):
        load_weights(model, cfg.get("finetuned"), "model.finetuned", key_map)
    elif cfg.get("load_pretrained", bool(cfg.get("pretrained"))):
        load_weights(model, cfg.get("pretrained"), "model.pretrained", key_map)
