"""caption_loss equals transformers' own labels= loss, for the Llama and OPT decoders."""
import pytest
import torch
from torch.nn import functional as F
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from lavis_evlgen.models import caption_loss as caption_loss_module
from lavis_evlgen.models.caption_loss import caption_loss


def _llama():
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))


def _opt():
    return OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                    num_attention_heads=4, word_embed_proj_dim=16, max_position_embeddings=64))


@pytest.mark.parametrize("build", [_llama, _opt])
def test_same_loss_and_gradient_as_labels(build):
    torch.manual_seed(0)
    llm = build().eval()
    prefix, text = 7, 5
    embeds = torch.randn(3, prefix + text, llm.config.hidden_size if build is _llama else 16, requires_grad=True)
    mask = torch.ones(3, prefix + text, dtype=torch.long)
    mask[1, -2:] = 0  # right padding
    targets = torch.randint(0, 50, (3, text))
    targets[1, -2:] = -100
    targets[2, :1] = -100  # a masked prompt token
    labels = torch.cat([torch.full((3, prefix), -100), targets], dim=1)

    expected = llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    (grad_expected,) = torch.autograd.grad(expected, embeds)
    got = caption_loss(llm, embeds, mask, targets)
    (grad_got,) = torch.autograd.grad(got, embeds)

    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad_got, grad_expected)


def test_targets_need_a_prefix():
    llm = _llama()
    with pytest.raises(ValueError, match="5 target positions need a longer input"):
        caption_loss(llm, torch.randn(1, 5, 32), torch.ones(1, 5, dtype=torch.long), torch.zeros(1, 5).long())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_matches_cross_entropy(monkeypatch, dtype):
    """Several chunks and a short last one (7 rows of 50 words, 2 rows a chunk) give F.cross_entropy's loss
    and, in the logits' dtype, its gradient."""
    monkeypatch.setattr(caption_loss_module, "CHUNK_ELEMENTS", 100)
    assert caption_loss_module.rows_per_chunk(50) == 2
    torch.manual_seed(0)
    logits = (torch.randn(7, 50) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (7,))

    expected = F.cross_entropy(logits.float(), targets)
    (grad_expected,) = torch.autograd.grad(expected * 3.0, logits)
    got = caption_loss_module.ChunkedCrossEntropy.apply(logits, targets)
    (grad_got,) = torch.autograd.grad(got * 3.0, logits)

    assert got.dtype == torch.float32 and grad_got.dtype == dtype
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad_got, grad_expected)


def test_chunked_cross_entropy_leaves_fp32_logits_unchanged_for_a_second_backward():
    logits = torch.randn(5, 30, requires_grad=True)
    targets = torch.randint(0, 30, (5,))
    scores = logits * 1.0  # a non-leaf, as the head's output is
    before = scores.detach().clone()
    loss = caption_loss_module.ChunkedCrossEntropy.apply(scores, targets)
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    assert torch.equal(scores.detach(), before)
    assert torch.equal(first, second)
