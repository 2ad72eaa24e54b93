"""Precision resolution: bf16 autocast on a CPU only with native bf16, fp16 never; dtype names checked."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lavis_evlgen.common.precision import Precision, cpu_has_native_bf16, resolve_precision


def test_cpu_ignores_fp16_amp_and_says_so():
    p = resolve_precision(OmegaConf.create({"amp": True, "amp_dtype": "fp16"}), torch.device("cpu"))
    assert p.dtype == torch.float32
    assert p.grad_scaler() is None
    assert "fp32" in p.describe() and "ignored" in p.describe()


def test_cpu_bf16_amp_follows_the_cpu():
    """bf16 autocast where this CPU computes bf16 natively, fp32 with the reason logged elsewhere."""
    p = resolve_precision(OmegaConf.create({"amp": True, "amp_dtype": "bf16"}), torch.device("cpu"))
    if cpu_has_native_bf16():
        assert p.dtype == torch.bfloat16 and p.autocast_enabled
        assert "bf16 autocast on cpu" in p.describe()
    else:
        assert p.dtype == torch.float32 and "no native bf16" in p.describe()
    assert p.grad_scaler() is None


def test_amp_off_is_fp32():
    p = resolve_precision(OmegaConf.create({}), torch.device("cpu"))
    assert not p.autocast_enabled
    assert "run.amp is off" in p.describe()


def test_unknown_dtype_names_the_key():
    with pytest.raises(ValueError, match="run.amp_dtype"):
        resolve_precision(OmegaConf.create({"amp": True, "amp_dtype": "int8"}), torch.device("cpu"))


def test_scaler_only_for_fp16():
    assert Precision("cuda", torch.float16, "t").needs_grad_scaler
    assert not Precision("cuda", torch.bfloat16, "t").needs_grad_scaler
    assert "bf16 autocast" in Precision("cuda", torch.bfloat16, "t").describe()


def test_autocast_context_on_cpu_bf16_changes_matmul_dtype():
    p = Precision("cpu", torch.bfloat16, "t")
    with p.autocast():
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.bfloat16


def _qkv(seed=0, shape=(2, 3, 7, 8)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, requires_grad=True) for _ in range(3)]


def test_attention_computes_in_fp32_under_cpu_bf16_autocast():
    """Inside Precision's CPU bf16 region, attention is fp32 SDPA of its inputs, returned in bf16."""
    import torch.nn.functional as F

    from lavis_evlgen.common.precision import attention

    q, k, v = _qkv()
    mask = torch.zeros(2, 1, 7, 7)
    mask[1, ..., 5:] = torch.finfo(torch.float32).min
    with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="fp32").autocast():
        qb, kb, vb = (t @ torch.eye(8) for t in (q, k, v))  # bf16 under autocast, as projections are
        out = attention(qb, kb, vb, attn_mask=mask)
    assert qb.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    expected = F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float(), attn_mask=mask).bfloat16()
    assert torch.equal(out, expected)
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()

    with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="bf16").autocast():
        native = attention(qb, kb, vb, attn_mask=mask)
        plain = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)
    assert torch.equal(native, plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast opened elsewhere: plain SDPA
        assert torch.equal(attention(qb, kb, vb, attn_mask=mask), plain)


def test_attention_outside_bf16_regions_is_plain_sdpa_in_every_dtype():
    import torch.nn.functional as F

    from lavis_evlgen.common.precision import attention

    for dtype in (torch.float32, torch.float64):
        q, k, v = (t.detach().to(dtype) for t in _qkv(1))
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert torch.equal(attention(q, k, v, is_causal=True), expected)
        # autocast leaves float64 alone, so does attention
        with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="fp32").autocast():
            if dtype == torch.float64:
                assert torch.equal(attention(q, k, v, is_causal=True), expected)


def test_describe_names_the_attention_dtype():
    assert Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="fp32").describe().endswith(
        "attention in fp32 (run.cpu_bf16_attention)")
    assert Precision("cpu", torch.bfloat16, "t").describe().endswith("attention in bf16")  # the default
    assert Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="bf16").describe().endswith("attention in bf16")
    assert Precision("cpu", torch.float32, "t").describe().endswith("attention in fp32")
    assert Precision("cuda", torch.bfloat16, "t").describe().endswith("attention in bf16")


def test_cpu_bf16_attention_is_checked_and_carried():
    with pytest.raises(ValueError, match="run.cpu_bf16_attention"):
        resolve_precision(OmegaConf.create({"amp": True, "cpu_bf16_attention": "fp16"}), torch.device("cpu"))
    p = resolve_precision(OmegaConf.create({"amp": True, "cpu_bf16_attention": "bf16"}), torch.device("cpu"))
    assert not p.attention_in_fp32
    assert resolve_precision(OmegaConf.create({"amp": True}), torch.device("cpu")).cpu_bf16_attention == "bf16"
