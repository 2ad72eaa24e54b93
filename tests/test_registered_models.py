"""Every model the plugin registers with LAVIS, built from its ``tiny`` type(s) through LAVIS's own loader:
forward and backward (gradients only in the declared trainable parts), generate, save and reload.

The list of models is the registry's, as in timm's tests/test_models.py: a new model is tested by registering it.
"""
from __future__ import annotations

import os

import pytest
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen
from lavis_evlgen.common.checkpoint import trainable_state_dict

PLUGIN_MODELS = sorted(name for name, cls in registry.mapping["model_name_mapping"].items()
                       if cls.__module__.startswith("lavis_evlgen."))
TINY_TYPES = [(name, model_type) for name in PLUGIN_MODELS
              for model_type in registry.get_model_class(name).PRETRAINED_MODEL_CONFIG_DICT
              if model_type == "tiny" or model_type.startswith("tiny_")]
CAPTIONS = ["a red circle", "two small blue squares"]


pytestmark = pytest.mark.usefixtures("one_thread_and_no_leftover_group")


def build(name: str, model_type: str, seed: int):
    torch.manual_seed(seed)
    return lavis_evlgen.load_model_and_preprocess(name, model_type)


def samples_for(model, name: str, model_type: str, vis_processors) -> dict:
    """Two samples in the input the model takes: clips for the video models, processed images otherwise."""
    g = torch.Generator().manual_seed(0)
    if hasattr(model, "frame_features"):
        size = OmegaConf.load(registry.get_model_class(name).default_config_path(model_type)).model.vision.image_size
        return {"video": torch.randn(2, 3, 4, size, size, generator=g), "text_input": CAPTIONS}
    from PIL import Image

    pixels = (torch.rand(2, 48, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
    images = torch.stack([vis_processors["train"](Image.fromarray(p)) for p in pixels])
    return {"image": images, "text_input": CAPTIONS}


def seeded_loss(model, samples: dict) -> torch.Tensor:
    """The loss with the sampling inside some losses (BLIP-2 stage 1's hard negatives) seeded."""
    torch.manual_seed(0)
    return model(samples)["loss"]


def in_part(param_name: str, parts: tuple[str, ...]) -> bool:
    return any(param_name == p or param_name.startswith(p + ".") for p in parts)


def test_every_plugin_model_has_a_tiny_type_and_a_config_file_for_every_type():
    assert PLUGIN_MODELS, "no model of the plugin is registered"
    assert {name for name, _ in TINY_TYPES} == set(PLUGIN_MODELS)
    for name in PLUGIN_MODELS:
        cls = registry.get_model_class(name)
        for model_type in cls.PRETRAINED_MODEL_CONFIG_DICT:
            assert os.path.isfile(cls.default_config_path(model_type)), (name, model_type)


@pytest.mark.parametrize("name,model_type", TINY_TYPES)
def test_build_train_generate_save_and_reload(name, model_type, tmp_path):
    model, vis_processors, txt_processors = build(name, model_type, seed=0)
    assert {"train", "eval"} <= set(vis_processors) and {"train", "eval"} <= set(txt_processors)
    parts = type(model).TRAINABLE_PARTS
    for n, p in model.named_parameters():
        assert p.requires_grad == in_part(n, parts), f"{n}: trainable must be exactly {parts}"

    samples = samples_for(model, name, model_type, vis_processors)
    model.train()
    for child_name, child in model.named_children():
        if not in_part(child_name, parts) and any(True for _ in child.parameters()):
            assert not child.training, f"{child_name} is frozen and must stay in eval mode"
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    loss = model(samples)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(in_part(n, parts) for n in with_grad)
    assert {part for part in parts if any(in_part(n, (part,)) for n in with_grad)} == set(parts)
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)

    model.eval()
    captions = model.generate(samples, num_beams=2, max_length=4)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)

    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)
        expected = seeded_loss(model, samples)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": trainable_state_dict(model)}, path)
    again, _, _ = build(name, model_type, seed=0)  # the same random frozen parts, the unchanged trainable ones
    with torch.no_grad():
        assert not torch.equal(seeded_loss(again.eval(), samples), expected)
        again.load_checkpoint(str(path))
        torch.testing.assert_close(seeded_loss(again, samples), expected)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(again.state_dict()[n], p), n
