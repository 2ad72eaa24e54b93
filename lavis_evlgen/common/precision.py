"""Training precision: fp32, or autocast to bf16 / fp16 (``run.amp``, ``run.amp_dtype``).

On a GPU both dtypes autocast. On a CPU only bf16 does, and only where the CPU computes it natively
(AVX512-BF16 or AMX): there it nearly halves a step of the embedded default; elsewhere bf16 is
emulated and slower than fp32, so the run stays in fp32 and says why. A gradient scaler is used
for fp16 only: bf16 has fp32's exponent range and needs none.

Attention under CPU bf16 autocast computes in bf16 like every other product (PyTorch's and transformers'
own behaviour). ``run.cpu_bf16_attention: fp32`` instead computes ``attention`` (used by the TomeFormer and,
through ``lavis_evlgen.models.llm``, by the LLM) in fp32 inside a CPU bf16 autocast region opened by
``Precision.autocast``: PyTorch's CPU flash-attention backward is several times slower in bf16 than in fp32
(15.2 ms against 2.8 ms on an AMX Xeon at the SmolLM2 shape [8, 9, 49, 64]), and a quickstart step takes
0.60 s instead of 0.77 s on a 2-core AVX512-BF16 EPYC. It is not the default because the quickstart trained
worse with it on the seeds measured on that machine (README, Quickstart results). Outside such a region
(fp32 runs, GPUs, float64 checks) ``attention`` is plain ``F.scaled_dot_product_attention``.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_ATTENTION = ("fp32", "bf16")

_attention_in_fp32 = contextvars.ContextVar("evlgen_attention_in_fp32", default=False)


@dataclass(frozen=True)
class Precision:
    """What the training and evaluation loops compute in, and why."""

    device_type: str
    dtype: torch.dtype
    reason: str
    cpu_bf16_attention: str = "bf16"

    @property
    def autocast_enabled(self) -> bool:
        return self.dtype != torch.float32

    @property
    def needs_grad_scaler(self) -> bool:
        return self.dtype == torch.float16

    @property
    def attention_in_fp32(self) -> bool:
        """True where ``attention`` leaves autocast for fp32: CPU bf16 autocast with ``cpu_bf16_attention`` fp32."""
        return self.device_type == "cpu" and self.dtype == torch.bfloat16 and self.cpu_bf16_attention == "fp32"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast context for forward passes (a no-op context for fp32)."""
        if not self.autocast_enabled:
            yield
            return
        token = _attention_in_fp32.set(self.attention_in_fp32)
        try:
            with torch.autocast(device_type=self.device_type, dtype=self.dtype):
                yield
        finally:
            _attention_in_fp32.reset(token)

    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """A fresh GradScaler for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.needs_grad_scaler else None

    def describe(self) -> str:
        """One log line naming the precision in effect."""
        name = {torch.float32: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.dtype]
        scaler = " with GradScaler" if self.needs_grad_scaler else ""
        if self.attention_in_fp32:
            attention = "attention in fp32 (run.cpu_bf16_attention)"
        else:
            attention = f"attention in {'fp32' if self.dtype == torch.float32 else name.split()[0]}"
        return f"precision: {name}{scaler} on {self.device_type} ({self.reason}); {attention}"


def attention_in_fp32(query: torch.Tensor) -> bool:
    """True inside a CPU bf16 autocast region of a ``Precision`` whose attention computes in fp32
    (float64 inputs, which autocast leaves alone, stay float64)."""
    return (_attention_in_fp32.get() and query.device.type == "cpu" and query.dtype != torch.float64
            and torch.is_autocast_enabled("cpu"))


def fp32(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A floating tensor as fp32; anything else (None, boolean masks) unchanged."""
    return tensor.float() if tensor is not None and tensor.is_floating_point() else tensor


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0, is_causal: bool = False,
              scale: Optional[float] = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, computed in fp32 where ``attention_in_fp32`` says so.

    The result then has the autocast dtype, as the plain call's would.
    """
    if not attention_in_fp32(query):
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale)
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(fp32(query), fp32(key), fp32(value), attn_mask=fp32(attn_mask),
                                             dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    return out.to(torch.get_autocast_dtype("cpu"))


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AVX512-BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(run_cfg: DictConfig, device: torch.device) -> Precision:
    """Precision for ``run.amp`` / ``run.amp_dtype`` (bf16 by default) on ``device``.

    Raises ValueError naming ``run.amp_dtype`` for an unknown dtype, or for bf16 on a GPU without it, and
    naming ``run.cpu_bf16_attention`` for a value other than fp32 / bf16.
    On a CPU, amp means bf16 autocast where the CPU has native bf16, else fp32 (the reason says which).
    """
    amp = bool(run_cfg.get("amp", False))
    dtype_name = str(run_cfg.get("amp_dtype", "bf16"))
    if dtype_name not in AMP_DTYPES:
        raise ValueError(f"run.amp_dtype: expected one of {sorted(AMP_DTYPES)}, got '{dtype_name}'")
    attention_dtype = str(run_cfg.get("cpu_bf16_attention", "bf16"))
    if attention_dtype not in CPU_BF16_ATTENTION:
        raise ValueError(f"run.cpu_bf16_attention: expected one of {list(CPU_BF16_ATTENTION)}, "
                         f"got '{attention_dtype}'")
    if not amp:
        return Precision(device.type, torch.float32, "run.amp is off")
    if device.type == "cpu":
        if dtype_name != "bf16":
            return Precision("cpu", torch.float32, f"run.amp ignored: a CPU trains in fp32 or bf16, not {dtype_name}")
        if not cpu_has_native_bf16():
            return Precision("cpu", torch.float32,
                             "run.amp ignored: this CPU has no native bf16 (AVX512-BF16/AMX), fp32 is faster")
        return Precision("cpu", torch.bfloat16, "run.amp with run.amp_dtype=bf16 on a CPU with native bf16",
                         attention_dtype)
    if device.type != "cuda":
        return Precision(device.type, torch.float32, f"run.amp ignored: {device.type} trains in fp32")
    if dtype_name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("run.amp_dtype: bf16 is not supported on this GPU; use fp16")
    return Precision("cuda", AMP_DTYPES[dtype_name], f"run.amp with run.amp_dtype={dtype_name}")
