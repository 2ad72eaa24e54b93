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
