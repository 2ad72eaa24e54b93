"""One training step of EVLGen under CPU bf16 autocast in each ``run.cpu_bf16_attention`` mode, on a fixed batch
(tiny random parts with a Llama LLM whose key and value heads are shared by query groups): the default's loss is
PyTorch's bf16 loss to the bit, and no mode's gradients are further from fp32's than PyTorch's bf16 kernel's."""
import pytest
import torch

import lavis_evlgen
from lavis_evlgen.common.precision import Precision, cpu_has_native_bf16
from lavis_evlgen.models.llm import ATTENTION


def _model():
    torch.manual_seed(0)
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen_vicuna", "tiny", is_eval=False, device="cpu")
    model.llm.config._attn_implementation = ATTENTION
    model.tomeformer.config.attention_probs_dropout_prob = 0.0  # as the embedded configs train: steps repeat
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
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


def test_each_attention_mode_keeps_the_step_within_bf16_noise():
    model, batch = _model(), _batch()
    assert model.llm.config.num_key_value_heads < model.llm.config.num_attention_heads
    ref_loss, ref_grads = _loss_and_grads(model, batch, Precision("cpu", torch.float32, "t"))
    runs = {mode: _loss_and_grads(model, batch, Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention=mode))
            for mode in ("bf16", "bf16_flash", "fp32")}
    flash_loss, flash_grads = runs["bf16_flash"]
    assert torch.equal(runs["bf16"][0], flash_loss)  # the same forward, through our LLM attention function
    for loss, grads in runs.values():
        assert _relative(loss, ref_loss) < 1e-2
        # bf16 gradients of a width-32 random model (with bf16 merge scores) are far from fp32 either way
        # (about 0.4-0.5 relative here): no mode may add to PyTorch's bf16 kernel's distance.
        assert _relative(grads, ref_grads) <= 1.25 * _relative(flash_grads, ref_grads) + 0.02


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_the_llm_runs_the_attention_mode_under_cpu_bf16_autocast(mode):
    """Spied through SDPA's inputs: ``fp32`` hands SDPA fp32 values outside autocast; ``bf16`` runs it in bf16
    under autocast in the forward and in fp32 outside autocast in the backward."""
    model, batch = _model(), _batch()
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, k, v, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention=mode).autocast():
            loss = model(batch)["loss"]
        forward = list(seen)
        loss.backward()
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
    layers = model.tomeformer.num_layers + model.llm.config.num_hidden_layers
    assert len(forward) == layers
    if mode == "fp32":
        assert set(forward) == {(torch.float32, torch.float32, False)} and len(seen) == layers
    else:
        assert set(forward) == {(torch.bfloat16, torch.bfloat16, True)}
        assert set(seen[layers:]) == {(torch.float32, torch.float32, False)} and len(seen) == 2 * layers


def test_build_llm_selects_the_attention_where_cpu_bf16_autocast_can_happen():
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen_vicuna", "tiny", is_eval=True, device="cpu")
    expected = ATTENTION if cpu_has_native_bf16() and not torch.cuda.is_available() else "sdpa"
    assert model.llm.config._attn_implementation == expected


@pytest.mark.parametrize("mode", ["fp32", "bf16", "bf16_flash"])
def test_regions_do_not_leak(mode):
    from lavis_evlgen.common.precision import cpu_bf16_attention

    q = torch.randn(1, 1, 2, 2)
    with Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention=mode).autocast():
        assert cpu_bf16_attention(q) == mode
    assert cpu_bf16_attention(q) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpu_bf16_attention(q) is None
