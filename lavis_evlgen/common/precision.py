"""Training precision: fp32, or autocast to bf16 / fp16 (``run.amp``, ``run.amp_dtype``).

On a GPU both dtypes autocast. On a CPU only bf16 does, and only where the CPU computes it natively
(AVX512-BF16 or AMX): there it nearly halves a step of the embedded default; elsewhere bf16 is
emulated and slower than fp32, so the run stays in fp32 and says why. A gradient scaler is used
for fp16 only: bf16 has fp32's exponent range and needs none.
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


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AVX512-BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(run_cfg: DictConfig, device: torch.device) -> Precision:
    """Precision for ``run.amp`` / ``run.amp_dtype`` (bf16 by default) on ``device``.

    Raises ValueError naming ``run.amp_dtype`` for an unknown dtype, or for bf16 on a GPU without it.
    On a CPU, amp means bf16 autocast where the CPU has native bf16, else fp32 (the reason says which).
    """
    amp = bool(run_cfg.get("amp", False))
    dtype_name = str(run_cfg.get("amp_dtype", "bf16"))
    if dtype_name not in AMP_DTYPES:
        raise ValueError(f"run.amp_dtype: expected one of {sorted(AMP_DTYPES)}, got '{dtype_name}'")
    if not amp:
        return Precision(device.type, torch.float32, "run.amp is off")
    if device.type == "cpu":
        if dtype_name != "bf16":
            return Precision("cpu", torch.float32, f"run.amp ignored: a CPU trains in fp32 or bf16, not {dtype_name}")
        if not cpu_has_native_bf16():
            return Precision("cpu", torch.float32,
                             "run.amp ignored: this CPU has no native bf16 (AVX512-BF16/AMX), fp32 is faster")
        return Precision("cpu", torch.bfloat16, "run.amp with run.amp_dtype=bf16 on a CPU with native bf16")
    if device.type != "cuda":
        return Precision(device.type, torch.float32, f"run.amp ignored: {device.type} trains in fp32")
    if dtype_name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("run.amp_dtype: bf16 is not supported on this GPU; use fp16")
    return Precision("cuda", AMP_DTYPES[dtype_name], f"run.amp with run.amp_dtype={dtype_name}")
