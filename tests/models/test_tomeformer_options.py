"""TomeFormer options beyond the paper: threshold merging, token-count schedules, random budgets,
question-conditioned merging and register tokens; and the default path, which must stay the paper's arithmetic."""
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertModel

from lavis_evlgen.models.tome import (
    NO_MERGE,
    batch_threshold,
    bipartite_soft_matching,
    compact,
    merge_mask,
    pad_tokens,
    parse_threshold,
    r_for_tokens,
    token_counts,
)
from lavis_evlgen.models.tomeformer import TomeFormer
from tests.models.test_tomeformer import SMALL, minilm_path, small_tomeformer

REFERENCE = Path(__file__).parent / "fixtures" / "tomeformer_reference.pt"


@pytest.mark.parametrize("case", ["mean", "mean_masked", "wavg_proportional_masked"])
def test_default_path_equals_the_reference_outputs(case):
    """Outputs of the TomeFormer as it was before these options (commit 32bffec; float64, fixed weights, seed 0,
    inputs and weights saved with them in the fixture)."""
    ref = torch.load(REFERENCE)
    expected = ref["cases"][case]
    model = TomeFormer.from_config(BertConfig(**ref["config"]), ref["r"], **expected["kwargs"]).double().eval()
    model.load_state_dict(ref["state"])
    with torch.no_grad():
        out = model(ref["x"], ref["mask"] if expected["masked"] else None)
    torch.testing.assert_close(out.last_hidden_state, expected["last_hidden_state"], rtol=0, atol=1e-14)
    assert out.attention_mask.equal(expected["attention_mask"])
    assert out.source.equal(expected["source"])
    assert out.tokens_per_layer == expected["tokens_per_layer"]


# ---------------------------------------------------------------- threshold merging, one layer
def _merged_per_item(metric, r, threshold, mask=None):
    """Valid tokens each item keeps after one threshold step (padded by 2 r, as the TomeFormer does)."""
    batch, tokens, _ = metric.shape
    mask = torch.ones(batch, tokens, dtype=torch.bool) if mask is None else mask
    merge, _ = bipartite_soft_matching(pad_tokens(metric, 2 * r), r, True, pad_tokens(mask, 2 * r), threshold)
    return merge_mask(merge, pad_tokens(mask, 2 * r)).sum(dim=1)


def test_one_layer_threshold_is_monotone_and_capped_by_r():
    torch.manual_seed(0)
    metric = torch.randn(4, 41, 8)
    metric[1, 20:] = metric[1, :1] + 0.01 * torch.randn(21, 8)             # near-duplicates: many merges
    kept = [_merged_per_item(metric, 12, t) for t in (-1.1, 0.0, 0.3, 0.6, 0.9, 0.99, 1.01)]
    for low, high in zip(kept, kept[1:]):
        assert (high >= low).all()
    assert kept[0].tolist() == [41 - 12] * 4                              # every pair qualifies: r merges
    assert kept[-1].tolist() == [41] * 4                                  # none qualifies
    assert kept[4][1] < kept[4][0]                                        # the near-duplicate item merges more


def test_threshold_needs_a_mask_and_enough_padding():
    metric = torch.randn(2, 11, 4)
    with pytest.raises(ValueError, match="needs a mask"):
        bipartite_soft_matching(metric, 3, threshold=0.5)
    mask = torch.ones(2, 11, dtype=torch.bool)
    metric[0, 2:] = metric[0, 1]                                          # item 0 merges 3, item 1 fewer
    with pytest.raises(ValueError, match="lack the padding"):
        bipartite_soft_matching(metric, 3, True, mask, threshold=0.99)


def test_compact_moves_valid_tokens_first_and_drops_shared_padding():
    mask = torch.tensor([[True, False, True, False, False], [False, True, False, False, False]])
    index = compact(mask)
    assert index.tolist() == [[0, 2], [1, 0]]
    assert mask.gather(1, index).tolist() == [[True, True], [True, False]]


def test_parse_threshold():
    assert parse_threshold(None, 3) is None
    assert parse_threshold(0.5, 2) == [0.5, 0.5]
    assert parse_threshold([0.9, None, 1], 3) == [0.9, None, 1.0]
    with pytest.raises(ValueError, match="one entry per layer"):
        parse_threshold([0.9], 3)
    with pytest.raises(ValueError, match="numbers or None"):
        parse_threshold(["high", 0.1], 2)


# ---------------------------------------------------------------- threshold merging, TomeFormer
def _scene_batch(noise=0.05):
    """Item 0: 65 random tokens (a busy image); item 1: 4 distinct tokens repeated, plus noise (a simple one)."""
    torch.manual_seed(0)
    busy = torch.randn(65, 32)
    simple = torch.randn(4, 32).repeat_interleave(16, dim=0)
    simple = torch.cat([torch.randn(1, 32), simple]) + noise * torch.randn(65, 32)
    return torch.stack([busy, simple]).double()


def test_threshold_minus_inf_equals_fixed_r():
    x = _scene_batch()
    fixed = small_tomeformer(r=4).double()
    adaptive = small_tomeformer(r=4, threshold=float("-inf")).double()
    with torch.no_grad():
        a, b = fixed(x), adaptive(x)
    assert b.tokens_per_layer == a.tokens_per_layer
    assert b.attention_mask.all()
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, rtol=0, atol=1e-12)
    assert b.source.equal(a.source)


def test_threshold_above_one_merges_nothing():
    x = _scene_batch()
    with torch.no_grad():
        out = small_tomeformer(r=4, threshold=1.01).double()(x)
        plain = small_tomeformer(r=0).double()(x)
    assert out.tokens_per_layer == [65] * 12
    torch.testing.assert_close(out.last_hidden_state, plain.last_hidden_state, rtol=0, atol=1e-12)


def test_simple_image_ends_with_fewer_tokens_and_higher_thresholds_never_give_fewer():
    """Across layers a higher threshold could in principle give fewer tokens (the later layers see other
    tokens); on these inputs the counts are monotone, and one layer (above) is monotone by construction."""
    x = _scene_batch()
    counts = []
    for threshold in (0.0, 0.5, 0.8, 0.9, 0.95, 0.99):
        with torch.no_grad():
            out = small_tomeformer(r=4, threshold=threshold).double()(x)
        counts.append(out.attention_mask.sum(dim=1))
        assert out.last_hidden_state.shape[1] == out.tokens_per_layer[-1] == int(counts[-1].max())
    for low, high in zip(counts, counts[1:]):
        assert (high >= low).all()
    middle = counts[3]
    assert middle[1] < middle[0] and middle[0] > 65 - 48 and middle[1] >= 65 - 48


def test_mixed_batch_equals_items_one_at_a_time():
    x = _scene_batch()
    model = small_tomeformer(r=4, threshold=0.9).double()
    with torch.no_grad():
        batched = model(x)
        alone = [model(x[i:i + 1]) for i in range(2)]
    lengths = [a.last_hidden_state.shape[1] for a in alone]
    assert lengths[0] != lengths[1]
    assert batched.attention_mask.sum(dim=1).tolist() == lengths
    for i, one in enumerate(alone):
        valid = batched.attention_mask[i].bool()
        assert valid[:lengths[i]].all() and not valid[lengths[i]:].any()   # valid tokens first
        torch.testing.assert_close(batched.last_hidden_state[i, valid], one.last_hidden_state[0], rtol=0, atol=1e-10)
        assert batched.source[i, valid].equal(one.source[0])


def test_threshold_with_padded_input_matches_the_item_alone():
    """(More noise than elsewhere: near-duplicate tokens tie in the matching at float rounding.)"""
    x = _scene_batch(noise=0.3)
    mask = torch.ones(2, 65, dtype=torch.long)
    mask[1, 40:] = 0
    model = small_tomeformer(r=4, threshold=0.9, merge_mode="wavg", proportional_attention=True).double()
    with torch.no_grad():
        batched = model(x, mask)
        alone = model(x[1:, :40])
    valid = batched.attention_mask[1].bool()
    torch.testing.assert_close(batched.last_hidden_state[1, valid], alone.last_hidden_state[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(batched.source[1, valid][:, :40], alone.source[0])
    assert batched.source[1, valid, 40:].sum() == 0                       # no valid token covers padding


def test_threshold_gradient_reaches_every_parameter():
    model = small_tomeformer(r=4, threshold=0.9).train()
    x = _scene_batch().float().requires_grad_(True)
    out = model(x)
    (out.last_hidden_state * out.attention_mask[..., None]).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


# ---------------------------------------------------------------- token-count schedules and random budgets
def test_r_for_tokens_lands_exactly_and_stays_even():
    for layers in (6, 12):
        for target in (9, 17, 29, 45, 100):
            schedule = r_for_tokens(257, target, layers)
            assert token_counts(257, schedule)[-1] == target
    assert r_for_tokens(257, 29, 12) == [19] * 12
    assert r_for_tokens(257, 45, 6) == [36, 36, 35, 35, 35, 35]
    for tokens in range(2, 30):
        for target in range(1, tokens + 1):
            for class_token in (True, False):
                try:
                    schedule = r_for_tokens(tokens, target, 3, class_token)
                except ValueError:
                    assert target < token_counts(tokens, [tokens] * 3, class_token)[-1]
                    continue
                assert token_counts(tokens, schedule, class_token)[-1] == target
    with pytest.raises(ValueError, match="reachable: 5 to 257"):
        r_for_tokens(257, 4, 6)


def test_inference_budget_changes_on_one_model():
    model = small_tomeformer(r=19)
    x = torch.randn(2, 257, 32)
    with torch.no_grad():
        for tokens in (9, 17, 29, 45):
            model.set_merge_schedule(tokens=tokens)
            assert model(x).last_hidden_state.shape == (2, tokens, 32)
        model.set_merge_schedule(r=19)
        assert model(x).last_hidden_state.shape == (2, 29, 32) and model.target_tokens is None
    with pytest.raises(ValueError, match="not both"):
        model.set_merge_schedule(r=19, tokens=29)
    with pytest.raises(ValueError, match="positive int"):
        model.set_merge_schedule(tokens=0)


def test_merging_sets_a_schedule_for_a_block_and_restores_the_previous_one():
    model = small_tomeformer(r=19)
    model.set_merge_schedule(tokens=29, threshold=0.5)
    x = torch.randn(1, 257, 32)
    with torch.no_grad():
        with model.merging(r=4):
            assert model(x).last_hidden_state.shape == (1, 257 - 12 * 4, 32)
            assert model.thresholds is None
        with pytest.raises(RuntimeError, match="inside"), model.merging(tokens=9):
            raise RuntimeError("inside")
    assert (model.r_per_layer, model.target_tokens, model.thresholds) == (None, 29, [0.5] * 12)
    assert model.describe_schedule() == "29 tokens, thresholds " + str([0.5] * 12)


def test_random_tokens_draw_per_training_forward_and_repeat_from_the_seed():
    model = small_tomeformer(r=8, random_tokens=(9, 45)).train()
    x = torch.randn(1, 129, 32)

    def draws(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return [model(x).last_hidden_state.shape[1] for _ in range(8)]

    first = draws(3)
    assert first == draws(3)
    assert first != draws(4)
    assert all(9 <= n <= 45 for n in first) and len(set(first)) > 3
    with torch.no_grad():
        assert model.eval()(x).last_hidden_state.shape[1] == 129 - 12 * 8  # evaluation uses r (or tokens)
    with pytest.raises(ValueError, match="random_tokens"):
        small_tomeformer(random_tokens=(10, 5))


# ---------------------------------------------------------------- tracked thresholds (mean_tokens)
@pytest.mark.parametrize("r,cap", [(3, 6), (5, 5), (2, 12)])
def test_batch_threshold_merges_r_per_item_on_average_and_no_item_beyond_its_cap(r, cap):
    torch.manual_seed(r)
    metric = torch.randn(5, 41, 8).double()
    metric[0, 1:] = metric[0, 1:2] + 0.01 * torch.randn(40, 8)             # one near-duplicate image
    mask = torch.ones(5, 41, dtype=torch.bool)
    mask[3, 30:] = False                                                  # and one shorter item
    threshold = batch_threshold(metric, r, cap, True, mask)
    merged = mask.sum(dim=1) - _merged_per_item(metric, cap, threshold, mask)
    assert int(merged.sum()) == 5 * r                                     # random scores: no ties
    assert (merged <= cap).all()
    if cap > r:
        assert merged[0] == min(cap, 5 * r) and merged.min() < r                     # the batch shares its merges out


def test_batch_threshold_with_nothing_to_merge():
    metric = torch.randn(2, 9, 4)
    assert batch_threshold(metric, 0, 4) == NO_MERGE
    assert batch_threshold(metric[:, :1], 3, 6) == NO_MERGE               # a class token alone


def _tracked(mean_tokens=29, **kwargs) -> TomeFormer:
    torch.manual_seed(0)
    config = BertConfig(**SMALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # repeatable training
    return TomeFormer.from_config(config, None, mean_tokens=mean_tokens, **kwargs)


def _scenes(batch=6):
    """Half the items near-duplicates of one token (simple images), half random (busy ones)."""
    torch.manual_seed(1)
    x = torch.randn(batch, 257, 32)
    x[: batch // 2] = x[: batch // 2, :1] + 0.3 * torch.randn(batch // 2, 257, 32)
    return x


def test_mean_tokens_training_hits_the_mean_and_busy_images_keep_more():
    model, x = _tracked().train(), _scenes()
    assert model.describe_schedule().endswith("(no thresholds tracked yet: the fixed schedule)")
    counts = model(x).attention_mask.sum(dim=1)
    assert counts.float().mean() == 29
    assert counts[3:].min() > 29 > counts[:3].max()
    assert int(model.thresholds_tracked) == 1 and model.running_thresholds.gt(0).all()


def test_mean_tokens_thresholds_are_a_running_average_of_the_batches():
    model, x = _tracked(threshold_momentum=0.25).train(), _scenes()
    model(x)
    first = model.running_thresholds.clone()
    model(x[[0, 3, 4, 5]])                                                 # busier batch: lower thresholds
    second = model.running_thresholds.clone()
    model(x[[0, 3, 4, 5]])
    moved = second - first
    assert (moved != 0).any()
    torch.testing.assert_close(model.running_thresholds - second, 0.75 * moved, rtol=1e-5, atol=1e-6)
    assert int(model.thresholds_tracked) == 3


def test_mean_tokens_evaluation_merges_by_the_running_thresholds_saved_with_the_weights():
    x = _scenes()
    untrained = _tracked().eval()
    with torch.no_grad():
        assert untrained(x).attention_mask.sum(dim=1).tolist() == [29] * 6  # nothing tracked: the fixed schedule
    model = _tracked().train()
    for _ in range(3):
        model(x)
    model.eval()
    with torch.no_grad():
        counts = model(x).attention_mask.sum(dim=1)
        expected = model.running_thresholds.tolist()
        with model.merging(r=[math.ceil(2 * r) for r in r_for_tokens(257, 29, 12)], threshold=expected):
            torch.testing.assert_close(model(x).last_hidden_state, model(x).last_hidden_state)
            by_hand = model(x).attention_mask.sum(dim=1)
    assert counts.tolist() == by_hand.tolist() and counts[3:].min() > counts[:3].max()
    assert model.describe_schedule().startswith("29 tokens on average, caps 2 x r (running thresholds")
    restored = _tracked().eval()
    restored.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert restored(x).attention_mask.sum(dim=1).tolist() == counts.tolist()


def test_mean_tokens_errors():
    with pytest.raises(ValueError, match="without threshold"):
        _tracked(threshold=0.9)
    with pytest.raises(ValueError, match="random_tokens or mean_tokens"):
        _tracked(random_tokens=(9, 45))
    with pytest.raises(ValueError, match="cap_factor"):
        _tracked(cap_factor=0.5)
    with pytest.raises(ValueError, match="threshold_momentum"):
        _tracked(threshold_momentum=0.0)
    with pytest.raises(ValueError, match="not both or neither"):
        small_tomeformer(r=4).set_merge_schedule(r=4, mean_tokens=29)


# ---------------------------------------------------------------- question-conditioned merging
def conditioned(**kwargs) -> TomeFormer:
    torch.manual_seed(0)
    return TomeFormer.from_pretrained(minilm_path(), r=8, condition=True, **kwargs).eval()


def test_condition_keeps_bert_word_embeddings_frozen_and_loads_the_tokenizer():
    model = conditioned()
    bert = BertModel.from_pretrained(minilm_path(), local_files_only=True)
    assert model.embeddings.word_embeddings.weight.equal(bert.embeddings.word_embeddings.weight)
    assert not model.embeddings.word_embeddings.weight.requires_grad
    assert model.tokenizer("a red circle").input_ids[0] == model.tokenizer.cls_token_id
    assert "embeddings.word_embeddings.weight" not in TomeFormer.from_pretrained(minilm_path(), r=8).state_dict()
    with pytest.raises(ValueError, match="condition_text"):
        model.condition_inputs(None, torch.device("cpu"))
    assert TomeFormer.from_pretrained(minilm_path(), r=8).condition_inputs(None, torch.device("cpu")) == {}


def test_question_changes_the_merges_and_never_reaches_the_output():
    model = conditioned()
    x = torch.randn(1, 65, 384).repeat(2, 1, 1)
    inputs = model.condition_inputs(["what colour is the circle?", "how many squares are there on the left?"],
                                    torch.device("cpu"))
    with torch.no_grad():
        out = model(x, **inputs)
        plain = TomeFormer.from_pretrained(minilm_path(), r=8).eval()(x)
    assert out.last_hidden_state.shape == plain.last_hidden_state.shape == (2, 65 - 6 * 8, 384)
    assert out.attention_mask.all()
    assert not torch.allclose(out.last_hidden_state[0], out.last_hidden_state[1], atol=1e-3)
    assert not out.source[0].equal(out.source[1])                          # the question moved the merges


@pytest.mark.parametrize("registers", [0, 4])
def test_condition_padding_is_masked(registers):
    """A short question padded in a batch gives what it gives alone; so do padded visual tokens; with register
    tokens too, and the question still counts."""
    model = conditioned(registers=registers)
    x = torch.randn(2, 50, 384)
    mask = torch.ones(2, 50, dtype=torch.long)
    mask[1, 35:] = 0
    questions = ["what is in the top left corner of the picture?", "colour?"]
    with torch.no_grad():
        batched = model(x, mask, **model.condition_inputs(questions, torch.device("cpu")))
        alone = model(x[1:, :35], **model.condition_inputs(questions[1:], torch.device("cpu")))
        other = model(x[1:, :35], **model.condition_inputs(["a longer question than that one?"], torch.device("cpu")))
    valid = batched.attention_mask[1].bool()
    torch.testing.assert_close(batched.last_hidden_state[1, valid], alone.last_hidden_state[0], rtol=0, atol=1e-4)
    assert not torch.allclose(alone.last_hidden_state, other.last_hidden_state, atol=1e-3)


def test_condition_gradients_and_errors():
    model = conditioned().train()
    x = torch.randn(2, 30, 384)
    inputs = model.condition_inputs(["where is the square?", "what shape?"], torch.device("cpu"))
    model(x, **inputs).last_hidden_state.square().mean().backward()
    for name, param in model.named_parameters():
        if name == "embeddings.word_embeddings.weight":
            assert param.grad is None
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="built without condition"):
        small_tomeformer()(torch.randn(1, 10, 32), condition=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="condition_mask must have shape"):
        model(x, condition=inputs["condition"], condition_mask=inputs["condition_mask"][:, :2])


# ---------------------------------------------------------------- register tokens
def test_registers_take_the_conditioned_path_with_learnt_vectors_in_place_of_word_embeddings():
    """Register vectors set to the word embeddings of [CLS] [SEP] give what the empty condition gives."""
    condition = conditioned()
    torch.manual_seed(0)
    registers = TomeFormer.from_pretrained(minilm_path(), r=8, registers=2).eval()
    ids = condition.condition_inputs([""], torch.device("cpu"))["condition"]
    assert ids.tolist() == [[condition.tokenizer.cls_token_id, condition.tokenizer.sep_token_id]]
    with torch.no_grad():
        registers.registers.copy_(condition.embeddings.word_embeddings(ids[0]))
        x = torch.randn(3, 65, 384)
        expected = condition(x, **condition.condition_inputs([""] * 3, torch.device("cpu")))
        out = registers(x)
        plain = TomeFormer.from_pretrained(minilm_path(), r=8).eval()(x)
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, rtol=0, atol=1e-5)
    assert out.source.equal(expected.source)
    assert out.last_hidden_state.shape == plain.last_hidden_state.shape == (3, 65 - 6 * 8, 384)
    assert not torch.allclose(out.last_hidden_state, plain.last_hidden_state, atol=1e-3)


def test_registers_can_start_at_the_empty_question():
    """register_init="empty_text" starts two registers where the empty condition is, without copying by hand;
    more registers repeat [CLS] [SEP]; the tokenizer is kept only for condition."""
    condition = conditioned()
    model = TomeFormer.from_pretrained(minilm_path(), r=8, registers=2, register_init="empty_text").eval()
    assert model.tokenizer is None and not hasattr(model.embeddings, "word_embeddings")
    x = torch.randn(3, 65, 384)
    with torch.no_grad():
        expected = condition(x, **condition.condition_inputs([""] * 3, torch.device("cpu")))
        out = model(x)
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, rtol=0, atol=1e-5)
    assert out.source.equal(expected.source)
    cls_sep = condition.embeddings.word_embeddings.weight[[condition.tokenizer.cls_token_id,
                                                           condition.tokenizer.sep_token_id]]
    three = TomeFormer.from_pretrained(minilm_path(), r=8, registers=3, register_init="empty_text")
    assert three.registers.requires_grad and three.registers.detach().equal(cls_sep[[0, 1, 0]])
    with pytest.raises(ValueError, match="register_init must be one of"):
        TomeFormer.from_pretrained(minilm_path(), r=8, registers=2, register_init="cls")
    with pytest.raises(ValueError, match="register_init 'empty_text' needs registers"):
        TomeFormer.from_pretrained(minilm_path(), r=8, register_init="empty_text")


def test_registers_are_learnt_and_off_by_default():
    assert "registers" not in small_tomeformer().state_dict()
    model = small_tomeformer(r=4, registers=3).train()
    assert model.registers.shape == (3, 32) and model.registers.requires_grad
    assert 0 < model.registers.std() < 0.1                                # drawn as BERT draws its weights
    model(torch.randn(2, 60, 32)).last_hidden_state.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for bad in (-1, True, 2.0, "2"):
        with pytest.raises(ValueError, match="registers must be a non-negative int"):
            small_tomeformer(registers=bad)


# ---------------------------------------------------------------- config keys
def _cfg(**keys):
    return OmegaConf.create({"r": 2, "config": dict(SMALL), **keys})


def test_build_tomeformer_reads_the_new_keys():
    from lavis_evlgen.models.evlgen import build_tomeformer

    model = build_tomeformer(_cfg(threshold=[0.9] * 12, tokens=29, random_tokens=[9, 45]))
    assert model.thresholds == [0.9] * 12 and model.random_tokens == (9, 45) and not model.condition
    assert model.target_tokens == 29                                       # what evaluation merges to
    assert build_tomeformer(_cfg(tokens=17)).target_tokens == 17         # tokens replaces r
    default = build_tomeformer(_cfg())
    assert default.thresholds is None and default.random_tokens is None and default.target_tokens is None
    tracked = build_tomeformer(_cfg(mean_tokens=20, cap_factor=3, threshold_momentum=0.1))
    assert (tracked.mean_tokens, tracked.r_per_layer) == (20, None)
    assert (tracked.cap_factor, tracked.threshold_momentum) == (3, 0.1)
    cfg = OmegaConf.create({"bert": str(minilm_path()), "r": 4, "condition": True})
    assert build_tomeformer(cfg).tokenizer is not None
    assert default.registers is None and build_tomeformer(_cfg(registers=3)).registers.shape == (3, 32)
    cfg = OmegaConf.create({"bert": str(minilm_path()), "r": 4, "registers": 2, "register_init": "empty_text"})
    assert build_tomeformer(cfg).registers.detach().equal(
        TomeFormer.from_pretrained(minilm_path(), r=4, registers=2, register_init="empty_text").registers.detach())
    with pytest.raises(ValueError, match="model.tomeformer: register_init must be one of"):
        build_tomeformer(OmegaConf.merge(cfg, {"register_init": "cls"}))


@pytest.mark.parametrize("keys,match", [(dict(threshold=[0.9, 0.8]), "model.tomeformer: threshold"),
                                        (dict(tokens=17, random_tokens=[5]), "model.tomeformer: random_tokens"),
                                        (dict(random_tokens=[9, 45]), "random_tokens needs model.tomeformer.tokens"),
                                        (dict(tokens="many"), "model.tomeformer: tokens"),
                                        (dict(mean_tokens=0), "model.tomeformer: mean_tokens"),
                                        (dict(mean_tokens=20, cap_factor="x"), "model.tomeformer.cap_factor"),
                                        (dict(condition="yes"), "model.tomeformer.condition"),
                                        (dict(registers=-2), "model.tomeformer: registers"),
                                        (dict(registers=2, register_init="empty_text"),
                                         "register_init 'empty_text' needs model.tomeformer.bert"),
                                        (dict(registers=2, register_init="cls"),
                                         "model.tomeformer: register_init must be one of"),
                                        (dict(condition=True), "model.tomeformer.condition needs")])
def test_bad_values_name_the_config_key(keys, match):
    from lavis_evlgen.models.evlgen import build_tomeformer

    with pytest.raises(ValueError, match=match):
        build_tomeformer(_cfg(**keys))


# ---------------------------------------------------------------- variable-length soft prompts in the LLM
@pytest.mark.parametrize("name", ["evlgen_opt", "evlgen_vicuna"])
def test_mixed_length_soft_prompts_give_one_at_a_time_loss_and_captions(name):
    """Threshold merging gives the tiny model's images 9 to 17 tokens; the padded soft prompts in a batch
    should give each image's own loss and captions."""
    from lavis.common.registry import registry

    from tests.models.test_evlgen import batch

    model_cls = registry.get_model_class(name)
    cfg = OmegaConf.load(model_cls.default_config_path("tiny")).model
    cfg.tomeformer.update({"r": 4, "threshold": 0.6})
    torch.manual_seed(0)
    model = model_cls.from_config(cfg).eval()
    samples = batch(4)
    samples["image"][1] = samples["image"][1].mean()                      # a flat image: the fewest tokens
    samples["text_input"] = ["a red circle"] * 4                          # equal lengths: the batch loss is a mean
    with torch.no_grad():
        counts = model.encode_image(samples)[1].sum(dim=1).tolist()
        assert len(set(counts)) > 2 and counts[1] == min(counts)
        items = [{"image": samples["image"][i:i + 1], "text_input": samples["text_input"][i:i + 1]} for i in range(4)]
        losses = [model(item)["loss"] for item in items]
        torch.testing.assert_close(model(samples)["loss"], torch.stack(losses).mean(), rtol=1e-5, atol=1e-6)
        for beams in (1, 3):
            captions = model.generate(samples, num_beams=beams, max_length=6)
            assert captions == [model.generate(item, num_beams=beams, max_length=6)[0] for item in items]


def test_encode_image_passes_condition_text_to_a_conditioned_tomeformer():
    from lavis_evlgen.models.evlgen import EVLGenOPT
    from tests.models.test_evlgen import batch

    cfg = OmegaConf.load(EVLGenOPT.default_config_path("tiny")).model
    cfg.tomeformer = {"bert": str(minilm_path()), "num_layers": 2, "r": 2, "condition": True}
    torch.manual_seed(0)
    model = EVLGenOPT.from_config(cfg).eval()
    samples = batch(1)
    with torch.no_grad():
        colour = model.encode_image({**samples, "condition_text": ["what colour is it?"]})
        count = model.encode_image({**samples, "condition_text": ["how many shapes are there?"]})
    assert colour[0].shape == count[0].shape == (1, 13, model.llm.config.hidden_size)
    assert not torch.allclose(colour[0], count[0], atol=1e-4)
    with pytest.raises(ValueError, match="condition_text"):
        model.encode_image(samples)
    # The loss and generate condition on the prompt text (the question), never on the caption.
    seen = []
    encode = model.encode_image
    model.encode_image = lambda s, *a, **k: seen.append(s["condition_text"]) or encode(s, *a, **k)
    with torch.no_grad():
        model({**samples, "prompt": "what colour is it?"})
        model.generate(samples, prompt="how many shapes are there?", num_beams=1, max_length=2)
    assert seen == [["what colour is it?"], ["how many shapes are there?"]]


def test_tools_that_encode_images_pass_the_prompt_to_a_conditioned_tomeformer():
    from lavis_evlgen.models.evlgen import EVLGenOPT
    from lavis_evlgen.tools.flops import count_stage
    from lavis_evlgen.tools.merge_map import merge_map

    cfg = OmegaConf.load(EVLGenOPT.default_config_path("tiny")).model
    cfg.tomeformer = {"bert": str(minilm_path()), "num_layers": 2, "r": 2, "condition": True}
    torch.manual_seed(0)
    model = EVLGenOPT.from_config(cfg).eval()
    image = torch.randn(3, 32, 32)
    assert merge_map(model, image).shape == (4, 4)
    assert merge_map(model, image, "what colour is it?").shape == (4, 4)
    cfg.use_features = True
    assert count_stage(EVLGenOPT.from_config(cfg), tokens=17, width=32).connector_tokens == 13
