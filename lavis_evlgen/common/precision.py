"""Training precision: fp32, or autocast to bf16 / fp16 (``run.amp``, ``run.amp_dtype``).

On a GPU both dtypes autocast. On a CPU only bf16 does, and only where the CPU computes it natively
(AVX512-BF16 or AMX): there it nearly halves a step of the embedded default; elsewhere bf16 is
emulated and slower than fp32, so the run stays in fp32 and says why. A gradient scaler is used
for fp16 only: bf16 has fp32's exponent range and needs none.

Attention under CPU bf16 autocast (``run.cpu_bf16_attention``, for ``attention``, used by the TomeFormer and,
through ``lavis_evlgen.models.llm``, by the LLM, inside a region opened by ``Precision.autocast``):

- ``bf16`` (default): the forward is PyTorch's bf16 SDPA (the flash kernel), so the loss is PyTorch's to the bit;
  the backward is fp32 SDPA's, recomputed from the saved bf16 inputs. PyTorch's CPU bf16 flash-attention
  backward is slow at the embedded shapes: forward and backward took 8.7 ms in bf16 against 4.0 ms this way at
  SmolLM2's [8, 9, 50, 64], and 45 ms against 39 ms at the TomeFormer's [8, 12, 257, 32] (2-core Zen 4 EPYC,
  medians of 25), and the quickstart step 0.88x as long (``bench_step --attention``). Its gradients are also
  nearer float64's than the bf16 kernel's (``tests/common/test_precision.py``).
- ``bf16_flash``: PyTorch's bf16 flash kernel forward and backward (the default until 2026-12-02; it repeats
  the records measured before).
- ``fp32``: forward and backward in fp32, the result cast back to bf16.

Outside such a region (fp32 runs, GPUs, float64 checks) ``attention`` is plain ``F.scaled_dot_product_attention``.
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
CPU_BF16_ATTENTION = ("bf16", "bf16_flash", "fp32")

_cpu_bf16_attention: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("evlgen_cpu_bf16_attention",
                                                                                   default=None)


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
    def attention_mode(self) -> Optional[str]:
        """The ``cpu_bf16_attention`` mode ``attention`` follows in this precision's region (CPU bf16 autocast),
        or None where attention is plain SDPA."""
        if self.device_type == "cpu" and self.dtype == torch.bfloat16:
            return self.cpu_bf16_attention
        return None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast context for forward passes (a no-op context for fp32)."""
        if not self.autocast_enabled:
            yield
            return
        token = _cpu_bf16_attention.set(self.attention_mode)
        try:
            with torch.autocast(device_type=self.device_type, dtype=self.dtype):
                yield
        finally:
            _cpu_bf16_attention.reset(token)

    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """A fresh GradScaler for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.needs_grad_scaler else None

    def describe(self) -> str:
        """One log line naming the precision in effect."""
        name = {torch.float32: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.dtype]
        scaler = " with GradScaler" if self.needs_grad_scaler else ""
        attention = ATTENTION_WORDS.get(self.attention_mode,
                                        f"attention in {'fp32' if self.dtype == torch.float32 else name.split()[0]}")
        return f"precision: {name}{scaler} on {self.device_type} ({self.reason}); {attention}"


ATTENTION_WORDS = {
    "bf16": "attention in bf16, its backward in fp32 (run.cpu_bf16_attention)",
    "bf16_flash": "attention in bf16, forward and backward (run.cpu_bf16_attention)",
    "fp32": "attention in fp32 (run.cpu_bf16_attention)",
}


def cpu_bf16_attention(query: torch.Tensor) -> Optional[str]:
    """The ``run.cpu_bf16_attention`` mode for ``query`` inside a CPU bf16 autocast region of a ``Precision``;
    None elsewhere, and for float64 inputs, which autocast leaves alone."""
    mode = _cpu_bf16_attention.get()
    if mode is None or query.device.type != "cpu" or query.dtype == torch.float64:
        return None
    return mode if torch.is_autocast_enabled("cpu") else None


def _as(tensor: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """A floating tensor in ``dtype``; anything else (None, boolean masks) unchanged."""
    return tensor.to(dtype) if tensor is not None and tensor.is_floating_point() else tensor


def fp32(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A floating tensor as fp32; anything else (None, boolean masks) unchanged."""
    return _as(tensor, torch.float32)


class FlashForwardFp32Backward(torch.autograd.Function):
    """SDPA whose forward is PyTorch's (bf16 flash on CPU) and whose backward is fp32 SDPA's, recomputed from the
    saved inputs (PyTorch's fp32 kernels, fastest of the fp32 ways measured at the TomeFormer's 257 tokens).

    Inputs: query [B, H, T, D], key and value [B, H, S, D] of one dtype; attn_mask None, boolean (True attends)
    or additive, broadcastable to [B, H, T, S]; no dropout.
    """

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor],
                is_causal: bool, scale: Optional[float]) -> torch.Tensor:
        ctx.save_for_backward(query, key, value, attn_mask)
        ctx.is_causal, ctx.scale = is_causal, scale
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        query, key, value, attn_mask = ctx.saved_tensors
        with torch.enable_grad(), torch.autocast("cpu", enabled=False):
            q, k, v = (t.detach().float().requires_grad_() for t in (query, key, value))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=fp32(attn_mask), is_causal=ctx.is_causal,
                                                 scale=ctx.scale)
            dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad_out.float())
        return dq.to(query.dtype), dk.to(key.dtype), dv.to(value.dtype), None, None, None


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0, is_causal: bool = False,
              scale: Optional[float] = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` in the ``run.cpu_bf16_attention`` mode ``cpu_bf16_attention`` names.

    The result has the dtype the plain call's would have (bf16 under CPU bf16 autocast).
    """
    mode = cpu_bf16_attention(query)
    if mode == "fp32":
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(fp32(query), fp32(key), fp32(value), attn_mask=fp32(attn_mask),
                                                 dropout_p=dropout_p, is_causal=is_causal, scale=scale)
        return out.to(torch.get_autocast_dtype("cpu"))
    if (mode == "bf16" and dropout_p == 0.0 and torch.is_grad_enabled()
            and any(t.requires_grad for t in (query, key, value))):
        dtype = torch.get_autocast_dtype("cpu")  # what autocast would cast SDPA's inputs and additive mask to
        return FlashForwardFp32Backward.apply(_as(query, dtype), _as(key, dtype), _as(value, dtype),
                                              _as(attn_mask, dtype), is_causal, scale)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                          is_causal=is_causal, scale=scale)


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
