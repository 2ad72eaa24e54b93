"""One training step of EVLGen under CPU bf16 autocast: with fp32 attention, loss and gradients stay as close to
fp32 as with bf16 attention, on a fixed batch (tiny random parts with a Llama LLM; the embedded model's check
is in tests/embedded/test_embedded_model.py)."""
import pytest
import torch

import lavis_evlgen
from lavis_evlgen.common.precision import Precision, cpu_has_native_bf16
from lavis_evlgen.models.llm import ATTENTION


def _model():
    torch.manual_seed(0)
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen_vicuna", "tiny", is_eval=False, device="cpu")
    model.llm.config._attn_implementation = ATTENTION
    return model.train()


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(4, 3, 32, 32, generator=g),
            "text_input": ["a red cat", "two blue dogs on the mat", "a small dog runs", "the grass"]}


def _loss_and_grads(model, batch, precision):
    model.zero_grad(set_to_none=True)
    with precision.autocast():
        loss = model(batch)["loss"]
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    return loss.detach().float(), grads


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_fp32_attention_step_matches_fp32_and_bf16_attention_within_bf16_noise():
    model, batch = _model(), _batch()
    ref_loss, ref_grads = _loss_and_grads(model, batch, Precision("cpu", torch.float32, "t"))
    loss, grads = _loss_and_grads(model, batch,
                                  Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="fp32"))
    old_loss, old_grads = _loss_and_grads(model, batch,
                                          Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="bf16"))
    assert _relative(loss, ref_loss) < 1e-2 and _relative(old_loss, ref_loss) < 1e-2
    # bf16 gradients of a width-32 random model (with bf16 merge scores) are far from fp32 either way
    # (about 0.4-0.5 relative here): fp32 attention must not add to that distance.
    assert _relative(grads, ref_grads) <= 1.25 * _relative(old_grads, ref_grads) + 0.02


def test_fp32_attention_is_what_the_llm_runs_under_cpu_bf16_autocast():
    """The LLM's attention function sees bf16 values and hands SDPA fp32 ones (spied through SDPA's inputs)."""
    model, batch = _model(), _batch()
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, k, v, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="fp32").autocast():
            model(batch)
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
    layers = model.tomeformer.num_layers + model.llm.config.num_hidden_layers
    assert len(seen) == layers
    assert set(seen) == {(torch.float32, torch.float32, False)}


def test_build_llm_selects_the_attention_where_cpu_bf16_autocast_can_happen():
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen_vicuna", "tiny", is_eval=True, device="cpu")
    expected = ATTENTION if cpu_has_native_bf16() and not torch.cuda.is_available() else "sdpa"
    assert model.llm.config._attn_implementation == expected


@pytest.mark.parametrize("cpu_bf16_attention", ["fp32", "bf16"])
def test_regions_do_not_leak(cpu_bf16_attention):
    from lavis_evlgen.common.precision import attention_in_fp32

    q = torch.randn(1, 1, 2, 2)
    with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention=cpu_bf16_attention).autocast():
        assert attention_in_fp32(q) == (cpu_bf16_attention == "fp32")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not attention_in_fp32(q)
