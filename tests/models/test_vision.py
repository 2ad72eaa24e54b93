"""The vision-encoder registry: DINOv2's ``num_layers`` (BLIP-2-style feature layer) and bad names."""
import pytest
import torch
from omegaconf import OmegaConf
from transformers import Dinov2Config, Dinov2Model

from lavis_evlgen.models.vision import HFVisionEncoder, build_vision_encoder

SMALL = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
         "image_size": 32, "patch_size": 8}


def _dinov2(**extra):
    return build_vision_encoder(OmegaConf.create({"name": "dinov2", "weights": None, "config": SMALL, **extra}))


def test_num_layers_returns_the_residual_stream_after_that_block():
    torch.manual_seed(0)
    full = Dinov2Model(Dinov2Config(**SMALL)).eval()
    cut = HFVisionEncoder(Dinov2Model(Dinov2Config(**SMALL)), num_layers=2).eval()
    cut.backbone.load_state_dict(full.state_dict(), strict=False)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = full(pixel_values=image, output_hidden_states=True).hidden_states[2]
        got = cut(image)
    assert len(cut.backbone.encoder.layer) == 2
    assert got.shape == (2, 17, 32)
    torch.testing.assert_close(got, expected)


def test_all_layers_by_default_with_the_final_norm():
    encoder = _dinov2()
    assert len(encoder.backbone.encoder.layer) == 4
    assert isinstance(encoder.backbone.layernorm, torch.nn.LayerNorm)
    assert isinstance(_dinov2(num_layers=4).backbone.layernorm, torch.nn.LayerNorm)


@pytest.mark.parametrize("bad", [0, 5, 2.5, True, "2"])
def test_bad_num_layers_names_the_key(bad):
    with pytest.raises(ValueError, match=r"model\.vision\.num_layers: expected an integer in \[1, 4\]"):
        _dinov2(num_layers=bad)


def test_unknown_encoder_lists_the_registered_ones():
    with pytest.raises(ValueError, match="model.vision.name: unknown vision encoder 'vit_xyz'.*dinov2"):
        build_vision_encoder(OmegaConf.create({"name": "vit_xyz"}))
