"""Options that reproduce the authors' release: Vicuna's tokens, caption end and penalty; OPT's BOS target.

A real Llama-family tokenizer (SmolLM2's, from the embedded cache) in front of a small random Llama stands
in for Vicuna-7b: the options act on the tokenizer and the embedding matrices, not on the weights.
"""
import pytest
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.models import visual_prompt

torch.set_num_threads(1)

# liptome_vicuna.py: add_special_tokens pad [PAD], then bos, eos and unk </s>; resize_token_embeddings.
VICUNA_TOKENS = {"pad_token": "[PAD]", "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>"}
SMOLLM2_VOCAB = 49152


@pytest.fixture(scope="module")
def llama_tokenizer_dir():
    from lavis_evlgen.embedded import prepare_embedded

    return str(prepare_embedded().llm_dir)


def build(tokenizer_dir, **overrides):
    torch.manual_seed(0)
    cfg = OmegaConf.load(registry.get_model_class("evlgen_vicuna").default_config_path("tiny")).model
    cfg = OmegaConf.merge(cfg, {"llm": {"tokenizer": tokenizer_dir, "config": {"vocab_size": SMOLLM2_VOCAB}}},
                          overrides)
    return registry.get_model_class("evlgen_vicuna").from_config(cfg).eval()


@pytest.fixture
def loss_targets(monkeypatch):
    """The targets of every caption_loss call (the real loss still runs)."""
    calls, real = [], visual_prompt.caption_loss

    def spy(llm, embeds, attention_mask, targets, **kwargs):
        calls.append((embeds, targets))
        return real(llm, embeds, attention_mask, targets, **kwargs)

    monkeypatch.setattr(visual_prompt, "caption_loss", spy)
    return calls


SAMPLES = {"image": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
           "text_input": ["a red circle", "two small blue squares"]}


def test_vicuna_release_tokens_caption_end_and_penalty(llama_tokenizer_dir, loss_targets, monkeypatch):
    model = build(llama_tokenizer_dir, caption_end="</s>", repetition_penalty=1.5,
                  llm={"special_tokens": VICUNA_TOKENS, "add_bos_token": True})
    tok = model.tokenizer
    end = tok.convert_tokens_to_ids("</s>")
    assert tok.bos_token == tok.eos_token == tok.unk_token == "</s>" and tok.pad_token == "[PAD]"
    # SmolLM2 knows neither token: both are new rows, set to the mean row in the input and output matrices.
    assert len(tok) == SMOLLM2_VOCAB + 2 == model.llm.get_input_embeddings().num_embeddings
    for matrix in (model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight):
        torch.testing.assert_close(matrix[-2:], matrix[:SMOLLM2_VOCAB].mean(0).expand(2, -1))
    assert tok("a red circle</s>").input_ids[0] == end and tok("a red circle</s>").input_ids[-1] == end

    model(SAMPLES)
    embeds, targets = loss_targets[-1]
    text_start = embeds.shape[1] - targets.shape[1]
    # [visual prompt][</s>][caption][</s>]: the BOS is not scored, the closing </s> is.
    torch.testing.assert_close(embeds[0, text_start], model.llm.get_input_embeddings().weight[end])
    assert targets[0, 0] == -100
    assert tok.decode(targets[0][targets[0] != -100]) == "a red circle</s>"

    calls, real = [], model.llm.generate

    def generate_spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(model.llm, "generate", generate_spy)
    model.generate(SAMPLES, num_beams=1, max_length=3)
    model.generate(SAMPLES, num_beams=1, max_length=3, repetition_penalty=1.0)
    model.predict_answers({**SAMPLES, "text_input": ["what?", "how many?"]}, num_beams=1, max_len=2)
    assert [c["repetition_penalty"] for c in calls] == [1.5, 1.0, 1.5]
    assert {c["eos_token_id"] for c in calls} == {end} and {c["pad_token_id"] for c in calls} == {tok.pad_token_id}


@pytest.mark.parametrize("target_bos", [False, True])
def test_target_bos_scores_the_bos_after_the_visual_prompt_only_without_a_prompt(llama_tokenizer_dir, loss_targets,
                                                                                 target_bos):
    model = build(llama_tokenizer_dir, target_bos=target_bos, llm={"add_bos_token": True})
    bos = model.tokenizer.bos_token_id
    model(SAMPLES)
    targets = loss_targets[-1][1]
    assert (targets[:, 0] == bos).all() if target_bos else (targets[:, 0] == -100).all()
    caption = model.tokenizer(SAMPLES["text_input"][0], add_special_tokens=False).input_ids
    assert targets[0, 1:1 + len(caption)].tolist() == caption
    model({**SAMPLES, "prompt": "a photo of "})
    targets = loss_targets[-1][1]
    prompt_len = len(model.tokenizer("a photo of ").input_ids)
    assert (targets[:, :prompt_len] == -100).all() and (targets[:, prompt_len] != -100).all()


def test_target_bos_changes_nothing_without_a_bos(loss_targets):
    """The byte tokenizer (like SmolLM2's by default) starts texts with no BOS: nothing more to score."""
    cls = registry.get_model_class("evlgen_opt")
    cfg = OmegaConf.load(cls.default_config_path("tiny")).model
    for target_bos in (False, True):
        torch.manual_seed(0)
        cls.from_config(OmegaConf.merge(cfg, {"target_bos": target_bos}))(SAMPLES)
    assert torch.equal(loss_targets[0][1], loss_targets[1][1])


def test_release_options_name_their_keys_when_they_cannot_apply():
    cfg = OmegaConf.load(registry.get_model_class("evlgen_opt").default_config_path("tiny")).model
    cls = registry.get_model_class("evlgen_opt")
    with pytest.raises(ValueError, match="model.caption_end"):
        cls.from_config(OmegaConf.merge(cfg, {"caption_end": ""}))
    with pytest.raises(ValueError, match="model.repetition_penalty"):
        cls.from_config(OmegaConf.merge(cfg, {"repetition_penalty": 0}))
    with pytest.raises(ValueError, match="model.llm.add_bos_token"):
        cls.from_config(OmegaConf.merge(cfg, {"llm": {"add_bos_token": True}}))
