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


def _clip_l(**settings):
    return build_vision_encoder(OmegaConf.create({"name": "clip_L", "weights": None, "image_size": 56, **settings}))


def test_clip_l_depth_is_required_and_weights_must_cover_the_encoder(tmp_path):
    """CLIP-L's depth is a config value (authors' fork: 23 blocks, LAVIS 1.0.2: 21); weights are read safely,
    the file's further blocks are left out, a tensor the encoder lacks in the file is an error."""
    with pytest.raises(ValueError, match="model.vision.depth"):
        _clip_l()
    torch.manual_seed(0)
    source = _clip_l(depth=2)
    assert len(source.transformer.resblocks) == 2
    state = source.state_dict()
    torch.manual_seed(1)
    deeper = _clip_l(depth=3).state_dict()
    state.update({k: v for k, v in deeper.items() if k.startswith("transformer.resblocks.2.")})
    torch.save(state, tmp_path / "clip.pth")
    loaded = _clip_l(depth=2, weights=str(tmp_path / "clip.pth"))
    for name, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    del state["ln_pre.weight"]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"model\.vision\.weights: .* lacks 1 tensors .*ln_pre\.weight"):
        _clip_l(depth=2, weights=str(tmp_path / "short.pth"))
