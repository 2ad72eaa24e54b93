"""Temporal contextualizer: Eqs. 4-7 by hand, identity at init on four ViT families, gates, frame order."""
import copy
from functools import partial

import pytest
import torch
from accelerate import init_empty_weights
from lavis.models import clip_vit, eva_vit
from omegaconf import OmegaConf
from torch import nn
from transformers import Dinov2Config, Dinov2Model

import lavis_evlgen  # noqa: F401
from lavis_evlgen.models.temporal import FrameCount, TemporalBlock, TemporalContextualizer, add_temporal_modules
from lavis_evlgen.models.vision import HFVisionEncoder, build_vision_encoder

torch.set_num_threads(1)


def eva_small():
    """LAVIS's EVA ViT as EVA-ViT-g configures it (88-channel heads, mlp_ratio 4.3637), at toy width."""
    return eva_vit.VisionTransformer(img_size=28, patch_size=14, use_mean_pooling=False, embed_dim=176, depth=2,
                                     num_heads=2, mlp_ratio=4.3637, qkv_bias=True,
                                     norm_layer=partial(nn.LayerNorm, eps=1e-6))


def eva_layer_scale():
    """EVA blocks with layer scale (gamma_1/gamma_2) and a relative position bias shared by the blocks."""
    return eva_vit.VisionTransformer(img_size=32, patch_size=8, use_mean_pooling=False, embed_dim=32, depth=2,
                                     num_heads=2, init_values=0.1, use_shared_rel_pos_bias=True)


def clip_small():
    return clip_vit.VisionTransformer(input_resolution=32, patch_size=8, width=32, layers=3, heads=2,
                                      use_grad_checkpointing=False)


def dinov2_small():
    return HFVisionEncoder(Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=64, image_size=32, patch_size=8)))


def tiny_vit():
    return build_vision_encoder(OmegaConf.create({"name": "tiny_vit", "image_size": 32, "patch_size": 8,
                                                  "width": 32, "depth": 2, "heads": 2}))


ENCODERS = {"eva_vit_g_block": (eva_small, 28), "eva_layer_scale": (eva_layer_scale, 32),
            "clip_L_block": (clip_small, 32), "dinov2": (dinov2_small, 32), "tiny_vit": (tiny_vit, 32)}


def reference_contextualizer(module: TemporalContextualizer, x, frames, scale_width=None):
    """Eqs. 4-7 written out with loops over clips, token positions and heads; scores / sqrt(scale_width),
    the head's query width unless given."""
    rows, length, dim = x.shape
    heads = module.num_heads
    qk_head, v_head = module.query.out_features // heads, dim // heads
    scale_width = scale_width or qk_head
    out = x.clone()
    for clip in range(rows // frames):
        for pos in range(length):
            tokens = x[clip * frames:(clip + 1) * frames, pos]  # [N, D]
            attend = tokens if module.frame_position is None else tokens + module.frame_position[:frames]
            q, k = module.query(attend), module.key(attend)
            context = torch.zeros_like(tokens)
            for h in range(heads):
                qk_cols, v_cols = slice(h * qk_head, (h + 1) * qk_head), slice(h * v_head, (h + 1) * v_head)
                w = torch.softmax(q[:, qk_cols] @ k[:, qk_cols].T / scale_width ** 0.5, dim=-1)
                context[:, v_cols] = w @ attend[:, v_cols]
            out[clip * frames:(clip + 1) * frames, pos] = tokens + module.gate * context
    return out


@pytest.mark.parametrize("positions", [0, 6])
def test_contextualizer_matches_equations_by_hand(positions):
    torch.manual_seed(0)
    module = TemporalContextualizer(dim=12, num_heads=3, qk_dim=9, num_frame_positions=positions)
    with torch.no_grad():
        module.gate.fill_(0.7)
    x = torch.randn(2 * 4, 5, 12)
    torch.testing.assert_close(module(x, 4), reference_contextualizer(module, x, 4), rtol=1e-5, atol=1e-6)


def test_release_scale_divides_the_scores_by_the_square_root_of_the_whole_query_width():
    """The authors' TemporalTokenMerge: q * qk_dim ** -0.5 (256 with 8 heads), not the head width's."""
    torch.manual_seed(0)
    module = TemporalContextualizer(dim=12, num_heads=3, qk_dim=9, scale="qk_dim")
    with torch.no_grad():
        module.gate.fill_(0.7)
    x = torch.randn(2 * 4, 5, 12)
    torch.testing.assert_close(module(x, 4), reference_contextualizer(module, x, 4, scale_width=9),
                               rtol=1e-5, atol=1e-6)
    assert (module(x, 4) - reference_contextualizer(module, x, 4)).abs().max() > 1e-3
    assert TemporalContextualizer(dim=1408, scale="qk_dim").scale == 1 / 16
    with pytest.raises(ValueError, match="model.temporal.scale"):
        TemporalContextualizer(dim=12, num_heads=3, qk_dim=9, scale="sqrt")


def test_contextualizer_is_identity_at_init_and_rejects_bad_shapes():
    module = TemporalContextualizer(dim=8, num_heads=2, qk_dim=4, num_frame_positions=3)
    x = torch.randn(6, 4, 8)
    assert torch.equal(module(x, 3), x)
    with pytest.raises(ValueError, match="whole number"):
        module(x, 4)
    with pytest.raises(ValueError, match="frame_positions"):
        module(torch.randn(8, 4, 8), 4)
    with pytest.raises(ValueError, match="num_heads"):
        TemporalContextualizer(dim=8, num_heads=3, qk_dim=6)
    with pytest.raises(ValueError, match="qk_dim"):
        TemporalContextualizer(dim=8, num_heads=2, qk_dim=5)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_wrapped_encoder_on_identical_frames_equals_the_image_encoder(name):
    """Gate at zero: the wrapped ViT on a clip batch is bit-for-bit the unwrapped ViT on the same batch; on
    clips of one repeated image it gives that image's tokens (up to the batch-size dependence of float
    kernels, one ulp or so)."""
    make, size = ENCODERS[name]
    torch.manual_seed(0)
    image_encoder = make().eval()
    video_encoder = copy.deepcopy(image_encoder)
    count = FrameCount()
    modules = add_temporal_modules(video_encoder, count)
    assert len(modules) == sum(isinstance(m, TemporalBlock) for m in video_encoder.modules()) >= 2
    images = torch.randn(2, 3, size, size)
    frames = 4
    clips = images.repeat_interleave(frames, dim=0)  # [B*N, C, H, W], each clip one image repeated
    with torch.no_grad():
        expected = image_encoder(images)
        same_batch = image_encoder(clips)
        count.frames = frames
        got = video_encoder(clips)
        count.frames = None
        as_images = video_encoder(images)
    assert torch.equal(got, same_batch)
    torch.testing.assert_close(got, expected.repeat_interleave(frames, dim=0), rtol=1e-5, atol=1e-6)
    assert torch.equal(as_images, expected)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_open_gate_changes_moving_clips_and_gradients_reach_gates(name):
    make, size = ENCODERS[name]
    torch.manual_seed(0)
    encoder = make()
    count = FrameCount()
    modules = add_temporal_modules(encoder, count)
    for p in encoder.parameters():
        p.requires_grad_(False)
    clips = torch.randn(2 * 3, 3, size, size)
    count.frames = 3
    before = encoder(clips).detach()
    encoder(clips).square().mean().backward()
    for m in modules:
        assert m.gate.grad is not None and m.gate.grad.abs() > 0
        # the gate multiplies the context, so at zero the projections get exactly zero gradient
        assert torch.count_nonzero(m.query.weight.grad) == 0 and torch.count_nonzero(m.key.weight.grad) == 0
    with torch.no_grad():
        for m in modules:
            m.gate.fill_(0.5)
    assert not torch.allclose(encoder(clips), before)


def test_dinov2_wrapper_keeps_attention_outputs():
    torch.manual_seed(0)
    encoder = dinov2_small()
    add_temporal_modules(encoder, FrameCount())
    out = encoder.backbone(pixel_values=torch.randn(2, 3, 32, 32), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 17, 17)


def test_wrapping_twice_or_an_unknown_encoder_is_refused():
    encoder = tiny_vit()
    add_temporal_modules(encoder, FrameCount())
    with pytest.raises(ValueError, match="already"):
        add_temporal_modules(encoder, FrameCount())
    with pytest.raises(ValueError, match="no ViT block"):
        add_temporal_modules(nn.Sequential(nn.Linear(4, 4)), FrameCount())


def test_heads_and_query_key_width_default_to_the_authors_release_and_can_be_set():
    modules = add_temporal_modules(dinov2_small(), FrameCount())
    assert {(m.num_heads, m.query.out_features, m.query.in_features) for m in modules} == {(8, 256, 32)}
    modules = add_temporal_modules(clip_small(), FrameCount(), num_heads=4, qk_dim=16)
    assert {(m.num_heads, m.key.out_features) for m in modules} == {(4, 16)}


def _reverse_frames(x, frames):
    return x.view(-1, frames, *x.shape[1:]).flip(1).flatten(0, 1)


@pytest.mark.parametrize("positions", [0, 4])
def test_frame_order_is_invisible_after_averaging_unless_frame_positions_are_used(positions):
    """Without positions the encoder is permutation-equivariant over frames, so their mean ignores order."""
    torch.manual_seed(0)
    encoder = tiny_vit()
    count = FrameCount()
    modules = add_temporal_modules(encoder, count, num_heads=2, qk_dim=16, num_frame_positions=positions)
    with torch.no_grad():
        for m in modules:
            m.gate.fill_(1.0)
    clips = torch.randn(2 * 4, 3, 32, 32)
    count.frames = 4
    with torch.no_grad():
        forward = encoder(clips)
        backward = encoder(_reverse_frames(clips, 4))
    mean_forward, mean_backward = forward.view(2, 4, 17, -1).mean(1), backward.view(2, 4, 17, -1).mean(1)
    if positions:
        assert (mean_forward - mean_backward).abs().max() > 1e-3
    else:
        torch.testing.assert_close(backward, _reverse_frames(forward, 4), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mean_forward, mean_backward, rtol=1e-5, atol=1e-5)


# CLIP-L: LAVIS's create_clip_vit_L builds 21 residual blocks, the authors' fork 23 (model.vision.depth).
@pytest.mark.parametrize("name,blocks,width", [("eva_clip_g", 39, 1408), ("clip_L", 21, 1024), ("clip_L", 23, 1024)])
def test_paper_vits_get_one_module_per_block(name, blocks, width):
    """The full-size EVA-ViT-g and CLIP-L (meta-device skeletons): W_q, W_k (to 256) with biases + a gate."""
    settings = {"name": name, "weights": None, **({"depth": blocks} if name == "clip_L" else {})}
    with init_empty_weights():
        encoder = build_vision_encoder(OmegaConf.create(settings))
        modules = add_temporal_modules(encoder, FrameCount())
    assert len(modules) == blocks
    assert sum(p.numel() for p in modules.parameters()) == blocks * (2 * (width * 256 + 256) + 1)
