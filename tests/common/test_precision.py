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


def _masks():
    g = torch.Generator().manual_seed(3)
    additive = torch.randn(2, 1, 7, 7, generator=g)  # not exact in bf16, as ToMe's log(size) bias is not
    additive[1, ..., 5:] = torch.finfo(torch.float32).min
    keep = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    keep[0, ..., 4:] = False
    return [({"attn_mask": additive}, "additive"), ({"attn_mask": keep}, "boolean"), ({"is_causal": True}, "causal")]


def _bf16_inputs(q, k, v):
    return [t @ torch.eye(8) for t in (q, k, v)]  # bf16 under autocast, as projections are


@pytest.mark.parametrize("kwargs,name", _masks(), ids=lambda x: x if isinstance(x, str) else "")
def test_bf16_attention_is_pytorchs_forward_with_an_fp32_backward(kwargs, name):
    """The default mode: the forward is the plain bf16 SDPA call's to the bit; the input gradients are fp32 SDPA's
    of the same bf16 inputs, and nearer float64's than those of PyTorch's bf16 kernel."""
    import torch.nn.functional as F

    from lavis_evlgen.common.precision import attention

    q, k, v = _qkv()
    grad = torch.randn(2, 3, 7, 8, generator=torch.Generator().manual_seed(4)).bfloat16()

    def grads(mode):
        with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention=mode).autocast():
            inputs = [t.detach().requires_grad_() for t in _bf16_inputs(q, k, v)]
            out = attention(*inputs, **kwargs)
        out.backward(grad)
        return out.detach(), inputs, [t.grad for t in inputs]

    out, inputs, got = grads("bf16")
    flash_out, _, flash = grads("bf16_flash")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.scaled_dot_product_attention(*inputs, **kwargs)
    assert out.dtype == torch.bfloat16 and torch.equal(out, plain) and torch.equal(flash_out, plain)

    fp32_inputs = [t.detach().float().requires_grad_() for t in inputs]
    mask = kwargs.get("attn_mask")
    fp32_kwargs = dict(kwargs, attn_mask=mask.bfloat16().float()) if mask is not None and mask.is_floating_point() \
        else kwargs  # the bf16 forward saw the mask as autocast casts it
    F.scaled_dot_product_attention(*fp32_inputs, **fp32_kwargs).backward(grad.float())
    for mine, ref in zip(got, fp32_inputs):
        assert mine.dtype == torch.bfloat16 and torch.equal(mine, ref.grad.bfloat16())

    exact = [t.detach().double().requires_grad_() for t in inputs]
    exact_kwargs = dict(kwargs, attn_mask=mask.bfloat16().double()) if mask is not None and mask.is_floating_point() \
        else kwargs
    F.scaled_dot_product_attention(*exact, **exact_kwargs).backward(grad.double())

    def error(approx):
        return sum(((a.double() - e.grad).norm() / e.grad.norm()).item() for a, e in zip(approx, exact))

    assert error(got) <= error(flash)


def test_attention_computes_in_fp32_under_cpu_bf16_autocast():
    """``fp32`` mode: fp32 SDPA of the bf16 inputs, returned in bf16; outside the regions, plain SDPA."""
    import torch.nn.functional as F

    from lavis_evlgen.common.precision import attention

    q, k, v = _qkv()
    mask = _masks()[0][0]["attn_mask"]
    with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="fp32").autocast():
        qb, kb, vb = _bf16_inputs(q, k, v)
        out = attention(qb, kb, vb, attn_mask=mask)
    assert qb.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    expected = F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float(), attn_mask=mask).bfloat16()
    assert torch.equal(out, expected)
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()

    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast opened elsewhere: plain SDPA
        plain = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)
        assert torch.equal(attention(qb, kb, vb, attn_mask=mask), plain)


def test_attention_outside_bf16_regions_is_plain_sdpa_in_every_dtype():
    import torch.nn.functional as F

    from lavis_evlgen.common.precision import attention

    for dtype in (torch.float32, torch.float64):
        q, k, v = (t.detach().to(dtype) for t in _qkv(1))
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert torch.equal(attention(q, k, v, is_causal=True), expected)
        # autocast leaves float64 alone, so does attention
        for mode in ("fp32", "bf16"):
            with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention=mode).autocast():
                if dtype == torch.float64:
                    assert torch.equal(attention(q, k, v, is_causal=True), expected)


def test_describe_names_the_attention_mode():
    assert Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="fp32").describe().endswith(
        "attention in fp32 (run.cpu_bf16_attention)")
    assert Precision("cpu", torch.bfloat16, "t").describe().endswith(  # the default
        "attention in bf16, its backward in fp32 (run.cpu_bf16_attention)")
    assert Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="bf16_flash").describe().endswith(
        "attention in bf16, forward and backward (run.cpu_bf16_attention)")
    assert Precision("cpu", torch.float32, "t").describe().endswith("attention in fp32")
    assert Precision("cuda", torch.bfloat16, "t").describe().endswith("attention in bf16")


def test_cpu_bf16_attention_is_checked_and_carried():
    with pytest.raises(ValueError, match="run.cpu_bf16_attention"):
        resolve_precision(OmegaConf.create({"amp": True, "cpu_bf16_attention": "fp16"}), torch.device("cpu"))
    for mode in ("bf16", "bf16_flash", "fp32"):
        p = resolve_precision(OmegaConf.create({"amp": True, "cpu_bf16_attention": mode}), torch.device("cpu"))
        assert p.attention_mode == (mode if p.dtype == torch.bfloat16 else None)
    assert resolve_precision(OmegaConf.create({"amp": True}), torch.device("cpu")).cpu_bf16_attention == "bf16"
    assert Precision("cuda", torch.bfloat16, "t", cpu_bf16_attention="fp32").attention_mode is None
