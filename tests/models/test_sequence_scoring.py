"""Sampled captions keep their token ids, and their scored log-probabilities are the generator's own."""
import pytest
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401

torch.set_num_threads(1)


@pytest.fixture(params=["evlgen_video_opt", "evlgen_video_vicuna"])
def model(request):
    cls = registry.get_model_class(request.param)
    cfg = OmegaConf.load(cls.default_config_path("tiny")).model
    torch.manual_seed(0)
    return cls.from_config(cfg).eval()


def samples(seed=0):
    g = torch.Generator().manual_seed(seed)
    # prompts of different lengths: the prompt text is left-padded between the visual prompt and the caption
    return {"video": torch.randn(2, 3, 4, 32, 32, generator=g), "prompt": ["", "a video of"]}


def test_scored_log_probs_equal_the_generators_scores(model):
    batch = samples()
    with torch.no_grad():
        embeds, atts = model.caption_prefix(batch)
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=atts, max_new_tokens=6, do_sample=False,
                                 num_beams=1, eos_token_id=model.end_token_id,
                                 pad_token_id=model.tokenizer.pad_token_id, output_scores=True,
                                 return_dict_in_generate=True)
        greedy = model.sample_captions(batch, greedy=True, max_length=6)
    assert torch.equal(greedy.tokens, out.sequences)
    log_probs = torch.stack(out.scores, dim=1).log_softmax(-1).gather(-1, out.sequences.unsqueeze(-1)).squeeze(-1)
    expected = -(log_probs * greedy.mask).sum(1)
    for row in range(2):
        weights = torch.zeros(2)
        weights[row] = 1.0
        with torch.no_grad():
            nll = model({**batch, "sequences": greedy.tokens, "sequence_mask": greedy.mask,
                         "sequence_source": greedy.source, "sequence_weights": weights})["loss"]
        torch.testing.assert_close(nll, expected[row], rtol=1e-4, atol=1e-4)


def test_greedy_texts_match_generate_and_samples_come_per_source(model):
    batch = samples(1)
    with torch.no_grad():
        greedy = model.sample_captions(batch, greedy=True, max_length=5)
        texts = model.generate(batch, num_beams=1, max_length=5, min_length=0)
        drawn = model.sample_captions(batch, num_samples=3, max_length=5)
    assert greedy.texts == texts
    assert drawn.tokens.size(0) == 6 and drawn.source.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(drawn.texts) == 6


def test_mask_ends_at_the_first_end_token(model):
    torch.manual_seed(0)
    with torch.no_grad():
        drawn = model.sample_captions(samples(), num_samples=4, max_length=8)
    for row, mask in zip(drawn.tokens, drawn.mask):
        ends = (row == model.end_token_id).nonzero().flatten()
        length = int(ends[0]) + 1 if len(ends) else row.numel()
        assert mask.tolist() == [1] * length + [0] * (row.numel() - length)


def test_weighted_sequence_loss_trains_the_connector_and_names_missing_keys(model):
    model.train()
    batch = samples()
    with torch.no_grad():
        drawn = model.sample_captions(batch, num_samples=2, max_length=4)
    loss = model({**batch, "sequences": drawn.tokens, "sequence_mask": drawn.mask, "sequence_source": drawn.source,
                  "sequence_weights": torch.tensor([1.0, -1.0, 0.5, 0.0])})["loss"]
    loss.backward()
    assert model.proj1.weight.grad is not None and model.proj1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.llm.parameters())
    with pytest.raises(KeyError, match="sequence_weights"):
        model({**batch, "sequences": drawn.tokens, "sequence_mask": drawn.mask, "sequence_source": drawn.source})
