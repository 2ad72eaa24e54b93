"""The shared LLM input layout: a soft prompt with masked positions (a variable token count) gives each row
the loss and the captions it gets alone, for each LLM family, in training and in generation."""
import pytest
import torch

import lavis_evlgen

CAPTION = "a red circle"


def soft_prompts(width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two soft prompts of 8 slots, the second with four masked slots (4 tokens), its last slot among them."""
    g = torch.Generator().manual_seed(0)
    vis = torch.randn(2, 8, width, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 1, 0, 1, 1, 0]])
    return vis, mask


@pytest.mark.parametrize("model_type", ["tiny", "tiny_llama"])
@pytest.mark.parametrize("bos_first", [False, True])
def test_masked_soft_prompt_positions_change_nothing(model_type, bos_first, monkeypatch):
    torch.manual_seed(0)
    model, _, _ = lavis_evlgen.load_model_and_preprocess("evlgen", model_type)
    model.eval()
    if bos_first and model.tokenizer.bos_token_id is None:
        model.tokenizer.bos_token = model.tokenizer.eos_token
    model.bos_first = bos_first
    vis, mask = soft_prompts(model.llm.config.hidden_size)
    alone = [(vis[i:i + 1, mask[i].bool()], torch.ones(1, int(mask[i].sum()), dtype=torch.long)) for i in range(2)]

    def run(prompt, prompt_mask):
        monkeypatch.setattr(model, "encode_image", lambda samples, *a, **k: (prompt, prompt_mask))
        samples = {"image": torch.zeros(prompt.size(0)), "text_input": [CAPTION] * prompt.size(0)}
        with torch.no_grad():
            return model(samples)["loss"], model.generate(samples, num_beams=1, max_length=6, min_length=6)

    batch_loss, batch_captions = run(vis, mask)
    single = [run(*row) for row in alone]
    # The same caption in both rows, so the same number of targets: the batch loss is the rows' mean.
    torch.testing.assert_close(batch_loss, (single[0][0] + single[1][0]) / 2, rtol=0, atol=3e-6)
    # (atol: fp32 noise here is <= 1e-6; positions counted without the mask are off by about 1e-5.)
    assert batch_captions == [single[0][1][0], single[1][1][0]]
