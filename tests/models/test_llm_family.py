"""The LLM family is configuration: a Qwen2-architecture LLM needs only a config, for every model that has an LLM."""
import argparse

import pytest
import torch
import yaml
from lavis.common.config import Config
from lavis.common.registry import registry
from omegaconf import OmegaConf
from transformers import Qwen2ForCausalLM

import lavis_evlgen  # noqa: F401  (registers the models)
from lavis_evlgen.models.llm import build_llm

QWEN2_TINY = {"family": "qwen2", "path": None, "tokenizer": "byte", "precision": "fp32",
              "config": {"vocab_size": 259, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128,
                         "pad_token_id": 256, "bos_token_id": 257, "eos_token_id": 258}}


def experiment(tmp_path, arch):
    """A user's experiment YAML: a registered model's tiny type with its LLM replaced by a Qwen2 (no code)."""
    path = tmp_path / "qwen2.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": arch, "model_type": "tiny", "llm": QWEN2_TINY},
                                    "run": {"task": "captioning"}, "datasets": {}}))
    return Config(argparse.Namespace(cfg_path=str(path), options=[])).model_cfg


@pytest.mark.parametrize("arch", ["evlgen", "evlgen_video", "blip2_stage2"])
def test_a_qwen2_llm_takes_only_a_config(tmp_path, arch):
    torch.manual_seed(0)
    model = registry.get_model_class(arch).from_config(experiment(tmp_path, arch))
    assert isinstance(model.llm, Qwen2ForCausalLM)
    samples = {"image": torch.randn(2, 3, 32, 32), "text_input": ["a red circle", "two blue squares"]}
    loss = model.train()(samples)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in model.llm.parameters())
    assert any(p.grad is not None for n, p in model.named_parameters() if not n.startswith("llm."))
    captions = model.eval().generate(samples, num_beams=2, max_length=4)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_unknown_or_missing_family_names_the_key():
    settings = {k: v for k, v in QWEN2_TINY.items() if k != "family"}
    with pytest.raises(ValueError, match="model.llm.family"):
        build_llm(OmegaConf.create(settings))
    with pytest.raises(ValueError, match="model.llm.family: transformers knows no model type 'nope'"):
        build_llm(OmegaConf.create({**settings, "family": "nope"}))
