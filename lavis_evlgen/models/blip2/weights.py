"""Stage 1's Q-Former into a stage-2 model (whole-model checkpoints load through ``PluginModelTypes``)."""
from __future__ import annotations

import logging

from torch import nn

from lavis_evlgen.models.weights import read_state_dict

logger = logging.getLogger(__name__)

# What stage 2 takes from a stage-1 checkpoint; everything else it trains (the LLM projection) starts new.
STAGE1_PARTS = ("Qformer.", "query_tokens", "ln_vision.")


def load_stage1(model: nn.Module, path: str, key: str = "model.stage1_checkpoint") -> None:
    """Initialise a stage-2 model's Q-Former, queries and ``ln_vision`` from a ``blip2_stage1`` checkpoint.

    Stage-1 tensors stage 2 has no use for (text FFNs, LM head, word embeddings, ITC/ITM heads) are
    dropped; a stage-2 Q-Former tensor missing from the checkpoint is an error naming the file.
    """
    state = read_state_dict(path, key)
    own = model.state_dict()
    wanted = [k for k in own if k.startswith(STAGE1_PARTS)]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{key}: {path} is not a blip2_stage1 checkpoint for this Q-Former: "
                         f"missing {missing[:8]}")
    mismatched = [k for k in wanted if state[k].shape != own[k].shape]
    if mismatched:
        raise ValueError(f"{key}: {path} has other shapes than this Q-Former: "
                         f"{[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in mismatched[:4]]}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    logger.info("stage 2 starts from the stage-1 Q-Former in %s (%d tensors)", path, len(wanted))
