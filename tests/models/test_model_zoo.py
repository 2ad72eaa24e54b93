"""Every registered model type builds (paper sizes as meta-device skeletons) with hand-counted sizes."""
import pytest
from accelerate import init_empty_weights
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401

# bert-base without word embeddings and pooler (never used on visual tokens):
# embeddings: position 512*768 + token type 2*768 + LayerNorm 2*768 = 396,288
# one layer: qkv 3*(768*768+768) + attn out 768*768+768 + LN 1,536
#            + intermediate 768*3072+3072 + output 3072*768+768 + LN 1,536 = 7,087,872
BERT_BASE_EMB = 396_288
BERT_BASE_LAYER = 7_087_872


def proj(d_in, d_out):
    return d_in * d_out + d_out


def skeleton(name, model_type):
    """Paper-size model with parameters on the meta device: no weights read, little memory used."""
    cls = registry.get_model_class(name)
    cfg = OmegaConf.load(cls.default_config_path(model_type)).model
    cfg.vision.weights = None
    cfg.tomeformer.bert = None
    cfg.llm.path = None
    cfg.llm.tokenizer = "byte"
    cfg.pop("finetuned", None)
    with init_empty_weights():
        return cls.from_config(cfg), cfg


def test_model_zoo_lists_plugin_models():
    from lavis.models import model_zoo

    assert "tiny" in model_zoo.model_zoo["evlgen_opt"]
    assert "pretrain_vicuna7b" in model_zoo.model_zoo["evlgen_vicuna"]
    assert "evlgen_opt" in str(model_zoo)


@pytest.mark.parametrize("name,model_type,vit_width,llm_width", [
    ("evlgen_opt", "pretrain_opt2.7b", 1408, 2560),
    ("evlgen_opt", "caption_coco_opt2.7b", 1408, 2560),
    ("evlgen_opt", "pretrain_opt6.7b", 1408, 4096),
    ("evlgen_vicuna", "pretrain_vicuna7b", 1408, 4096),
])
def test_paper_types_build_as_skeletons_with_hand_counted_trainables(name, model_type, vit_width, llm_width):
    model, cfg = skeleton(name, model_type)
    expected = (BERT_BASE_EMB + 12 * BERT_BASE_LAYER + proj(vit_width, 768) + proj(768, llm_width)
                + 2 * vit_width)
    assert model.trainable_parameters() == expected
    assert model.tomeformer.config.num_hidden_layers == 12
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    llm_b = {2560: 2.65e9, 4096: 6.6e9}[llm_width]
    assert frozen > 0.98e9 + 0.9 * llm_b


def test_opt27b_trainable_count_is_88_5m():
    model, _ = skeleton("evlgen_opt", "pretrain_opt2.7b")
    assert model.trainable_parameters() == 88_504_320


def test_55m_variant_is_six_layers():
    cls = registry.get_model_class("evlgen_opt")
    cfg = OmegaConf.load(cls.default_config_path("pretrain_opt2.7b")).model
    cfg.vision.weights, cfg.tomeformer.bert, cfg.llm.path, cfg.llm.tokenizer = None, None, None, "byte"
    cfg.tomeformer.num_layers = 6
    with init_empty_weights():
        model = cls.from_config(cfg)
    expected = BERT_BASE_EMB + 6 * BERT_BASE_LAYER + proj(1408, 768) + proj(768, 2560) + 2 * 1408
    assert model.trainable_parameters() == expected
