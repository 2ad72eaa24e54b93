"""Frozen linear layers that keep a bf16 copy of their weight for CPU bf16 autocast.

Autocast casts an fp32 weight to bf16 wherever a linear layer uses it. It caches that cast for trainable
leaves within one autocast region, but casts a frozen weight (``requires_grad`` False) anew at every call:
for the embedded SmolLM2 that is 106 M parameters of linear layers and the 28 M of its tied output head in
every training step. A frozen weight does not change, so :class:`FrozenBf16Linear` casts it once and uses the
copy whenever CPU bf16 autocast is on. The copy is the same rounding autocast makes, so outputs and gradients
are bit-identical; it is rebuilt when the weight is replaced, moved or written in place (checkpoint loading),
it is not in the state dict, and it costs half the layer's fp32 memory, only in runs that use it. Everywhere
else (fp32, GPUs, fp16, a weight that trains) the layer is a plain ``nn.Linear``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBf16Linear(nn.Linear):
    """``nn.Linear`` whose frozen fp32 weight is cast to bf16 once for all CPU bf16 autocast calls."""

    _bf16: Optional[tuple[tuple, torch.Tensor]] = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (weight.requires_grad or weight.dtype != torch.float32 or weight.device.type != "cpu"
                or not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") != torch.bfloat16):
            return super().forward(input)
        return F.linear(input, self.bf16_weight(), self.bias)

    def bf16_weight(self) -> torch.Tensor:
        """The weight in bf16, cast again only if the weight was replaced or written since the last cast."""
        key = (self.weight.data_ptr(), self.weight._version, self.weight.shape)
        if self._bf16 is None or self._bf16[0] != key:
            with torch.no_grad(), torch.autocast("cpu", enabled=False):
                self._bf16 = (key, self.weight.detach().to(torch.bfloat16))
        return self._bf16[1]


def keep_bf16_weights(module: nn.Module) -> int:
    """Make every plain ``nn.Linear`` in ``module`` a :class:`FrozenBf16Linear` (same parameters, same state
    dict); return how many. Call it on frozen modules; a layer whose weight trains is left to autocast."""
    count = 0
    for layer in module.modules():
        if type(layer) is nn.Linear:
            layer.__class__ = FrozenBf16Linear
            count += 1
    return count
