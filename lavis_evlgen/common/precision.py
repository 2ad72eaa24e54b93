"""Training precision: fp32, or autocast to bf16 / fp16 on a GPU (``run.amp``, ``run.amp_dtype``).

CPU runs always compute in fp32 (autocast is off). A gradient scaler is used for fp16 only: bf16
has fp32's exponent range and needs none.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch
from omegaconf import DictConfig

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What the training and evaluation loops compute in, and why."""

    device_type: str
    dtype: torch.dtype
    reason: str

    @property
    def autocast_enabled(self) -> bool:
        return self.dtype != torch.float32

    @property
    def needs_grad_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> ContextManager:
        """Autocast context for forward passes (a no-op context for fp32)."""
        if not self.autocast_enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """A fresh GradScaler for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.needs_grad_scaler else None

    def describe(self) -> str:
        """One log line naming the precision in effect."""
        name = {torch.float32: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.dtype]
        scaler = " with GradScaler" if self.needs_grad_scaler else ""
        return f"precision: {name}{scaler} on {self.device_type} ({self.reason})"


def resolve_precision(run_cfg: DictConfig, device: torch.device) -> Precision:
    """Precision for ``run.amp`` / ``run.amp_dtype`` (bf16 by default) on ``device``.

    Raises ValueError naming ``run.amp_dtype`` for an unknown dtype, or for bf16 on a GPU without it.
    """
    amp = bool(run_cfg.get("amp", False))
    dtype_name = str(run_cfg.get("amp_dtype", "bf16"))
    if dtype_name not in AMP_DTYPES:
        raise ValueError(f"run.amp_dtype: expected one of {sorted(AMP_DTYPES)}, got '{dtype_name}'")
    if not amp:
        return Precision(device.type, torch.float32, "run.amp is off")
    if device.type != "cuda":
        return Precision(device.type, torch.float32, f"run.amp ignored: {device.type} trains in fp32")
    if dtype_name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("run.amp_dtype: bf16 is not supported on this GPU; use fp16")
    return Precision("cuda", AMP_DTYPES[dtype_name], f"run.amp with run.amp_dtype={dtype_name}")
