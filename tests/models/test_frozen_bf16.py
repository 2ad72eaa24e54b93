"""Frozen linear layers' bf16 weight copies: bit-identical to autocast's casts, rebuilt when the weight changes."""
from __future__ import annotations

import copy

import torch
from omegaconf import OmegaConf
from torch import nn

from lavis_evlgen.models.frozen_bf16 import FrozenBf16Linear
from lavis_evlgen.models.llm import build_llm, freeze

TINY_LLAMA = {"family": "llama", "path": None, "tokenizer": "byte", "precision": "fp32", "tie_word_embeddings": True,
              "config": {"vocab_size": 259, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}}


def loss_and_input_grad(llm: nn.Module, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    embeds = embeds.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = llm(inputs_embeds=embeds).logits
    loss = logits.float().logsumexp(-1).mean()
    loss.backward()
    return loss.detach(), embeds.grad


def test_frozen_llm_under_cpu_bf16_autocast_is_bit_identical_to_autocast_casting_every_call():
    torch.manual_seed(0)
    llm, _ = build_llm(OmegaConf.create(TINY_LLAMA))
    plain = copy.deepcopy(llm)
    for p in plain.parameters():
        p.requires_grad_(False)
    freeze(llm)
    assert all(type(m) is not nn.Linear for m in llm.modules())
    assert type(plain.lm_head) is nn.Linear and isinstance(llm.lm_head, FrozenBf16Linear)
    assert llm.lm_head.weight is llm.get_input_embeddings().weight  # still tied
    assert llm.state_dict().keys() == plain.state_dict().keys()
    embeds = torch.randn(2, 7, 64)
    loss, grad = loss_and_input_grad(llm, embeds)
    loss_ref, grad_ref = loss_and_input_grad(plain, embeds)
    assert torch.equal(loss, loss_ref) and torch.equal(grad, grad_ref)
    with torch.no_grad():  # outside autocast: the fp32 weights, as before
        assert torch.equal(llm(inputs_embeds=embeds).logits, plain(inputs_embeds=embeds).logits)


def test_the_copy_is_made_once_and_again_after_the_weight_is_written_or_trains():
    layer = nn.Linear(8, 4)
    layer.weight.requires_grad_(False)
    layer.__class__ = FrozenBf16Linear
    first = layer.bf16_weight()
    assert layer.bf16_weight() is first and first.dtype == torch.bfloat16
    assert torch.equal(first, layer.weight.to(torch.bfloat16))
    layer.load_state_dict({"weight": torch.ones(4, 8), "bias": torch.zeros(4)})  # in place: the version moves
    assert layer.bf16_weight() is not first and torch.equal(layer.bf16_weight(), torch.ones(4, 8, dtype=torch.bfloat16))
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
        layer.weight.requires_grad_(True)  # trains: autocast's own path, gradients reach the weight
        layer(x).float().sum().backward()
    assert layer.weight.grad is not None
