"""The embedded evlgen_vicuna model as configured: the prompt the LLM is trained on is the one it is evaluated on."""
import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401  registers the models
from lavis_evlgen.common.paths import config_path


def test_training_and_evaluation_modes_give_the_same_loss(embedded_paths):
    """With dropout in the TomeFormer the frozen LLM learned to read noisy prompts only; the config turns it off."""
    cfg = OmegaConf.load(config_path("models/evlgen_vicuna/embedded.yaml")).model
    cfg.vision.weights, cfg.tomeformer.bert, cfg.llm.path = (str(embedded_paths.vision_dir),
                                                            str(embedded_paths.bert_dir), str(embedded_paths.llm_dir))
    model = registry.get_model_class("evlgen_vicuna").from_config(cfg)
    torch.manual_seed(0)
    samples = {"image_features": torch.randn(2, 257, 384), "text_input": ["a small red circle", "a large blue star"]}
    with torch.no_grad():
        model.train()
        training = [model(samples)["loss"] for _ in range(2)]
        model.eval()
        evaluation = model(samples)["loss"]
    torch.testing.assert_close(training[0], training[1])
    torch.testing.assert_close(training[0], evaluation)
