"""Checkpoints: the authors' four releases (their exact key names), ours, LAVIS's runner files; safe reading.

The authors' runner saves ``state_dict()`` less frozen parameters, so their files hold these keys
(lavis/models/blip2_models/liptome_{opt,vicuna,video_opt,video_vicuna}.py, modeling_bert.py without word
embeddings or pooler, eva_vit_g.py's ``TemporalTokenMerge`` in each of 39 blocks, modeling_llama.py's
persistent ``inv_freq``). The names are written out here, not derived from our model.
"""
import logging
import pickle

import pytest
import torch
from accelerate import init_empty_weights
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.checkpoint import trainable_state_dict
from lavis_evlgen.models.loading import EVLGEN_KEYS, EVLGEN_VIDEO_KEYS, fit_state_dict, load_from_config
from lavis_evlgen.models.weights import MissingWeightsError, read_state_dict, require_weights

torch.set_num_threads(1)

# Paper sizes: EVA-ViT-g 1408 wide with 39 blocks, bert-base (768, 3072, 512 positions), OPT-2.7b 2560,
# Vicuna-7b 4096 with 32 layers of 32 heads (inv_freq: head dim 128 / 2), qk_dim 256, ITC embed_dim 256.
PAPER = dict(vit=1408, hidden=768, inter=3072, positions=512, layers=12, blocks=39, qk=256)
# The tiny types' sizes (lavis_evlgen/configs/models/*/tiny.yaml): everything 32 wide, 2 layers, 2 ViT blocks.
TINY = dict(vit=32, hidden=32, inter=64, positions=64, layers=2, blocks=2, qk=16)


def authors_image_keys(vit, hidden, inter, positions, layers, llm_width, llm_proj, **_):
    """Key -> shape of liptome_opt / liptome_vicuna checkpoints (their trainable parts)."""
    keys = {"ln_vision.weight": (vit,), "ln_vision.bias": (vit,),
            "VL_proj.weight": (hidden, vit), "VL_proj.bias": (hidden,),
            "VLconnector.embeddings.position_embeddings.weight": (positions, hidden),
            "VLconnector.embeddings.token_type_embeddings.weight": (2, hidden),
            "VLconnector.embeddings.LayerNorm.weight": (hidden,), "VLconnector.embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        layer = f"VLconnector.encoder.layer.{i}."
        for linear in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            keys[layer + linear + ".weight"], keys[layer + linear + ".bias"] = (hidden, hidden), (hidden,)
        keys[layer + "intermediate.dense.weight"], keys[layer + "intermediate.dense.bias"] = (inter, hidden), (inter,)
        keys[layer + "output.dense.weight"], keys[layer + "output.dense.bias"] = (hidden, inter), (hidden,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            keys[layer + norm + ".weight"], keys[layer + norm + ".bias"] = (hidden,), (hidden,)
    keys[f"{llm_proj}.weight"], keys[f"{llm_proj}.bias"] = (llm_width, hidden), (llm_width,)
    return keys


def vicuna_buffers(llm_layers, head_dim):
    """modeling_llama.py's LlamaRotaryEmbedding registers inv_freq as a persistent buffer in every layer."""
    return {f"llm_model.model.layers.{i}.self_attn.rotary_emb.inv_freq": (head_dim // 2,) for i in range(llm_layers)}


def temporal_keys(vit, blocks, qk, **_):
    """eva_vit_g.py: Block.temporal_merge = TemporalTokenMerge(key, query: Linear(dim, 256), alpha: scalar)."""
    keys = {}
    for i in range(blocks):
        block = f"visual_encoder.blocks.{i}.temporal_merge."
        for linear in ("query", "key"):
            keys[block + linear + ".weight"], keys[block + linear + ".bias"] = (qk, vit), (qk,)
        keys[block + "alpha"] = ()
    return keys


def itc_keys(hidden, embed_dim=256, simcse=768):
    """The authors' optional contrastive loss (beta > 0): temp, vision_proj, text_proj."""
    return {"temp": (), "vision_proj.weight": (embed_dim, hidden), "vision_proj.bias": (embed_dim,),
            "text_proj.weight": (embed_dim, simcse), "text_proj.bias": (embed_dim,)}


def tensors(shapes, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def model_cfg(name, model_type, **overrides):
    cfg = OmegaConf.load(registry.get_model_class(name).default_config_path(model_type)).model
    return OmegaConf.merge(cfg, overrides)


def skeleton(name, model_type):
    """Paper-size model on the meta device (no weights read)."""
    cfg = model_cfg(name, model_type)
    cfg.vision.weights, cfg.tomeformer.bert, cfg.llm.path, cfg.llm.tokenizer = None, None, None, "byte"
    cfg.pop("finetuned", None)
    cfg.image_checkpoint = None
    with init_empty_weights():
        return registry.get_model_class(name).from_config(cfg)


def tiny(name, seed=0, **overrides):
    torch.manual_seed(seed)
    return registry.get_model_class(name).from_config(model_cfg(name, "tiny", **overrides))


# (model, paper type, llm width, projection name, Vicuna buffers, video)
RELEASES = {
    "opt": ("evlgen_opt", "pretrain_opt2.7b", 2560, "opt_proj", False, False),
    "vicuna": ("evlgen_vicuna", "pretrain_vicuna7b", 4096, "llm_proj", True, False),
    "video_opt": ("evlgen_video_opt", "video_opt2.7b", 2560, "opt_proj", False, True),
    "video_vicuna": ("evlgen_video_vicuna", "video_vicuna7b", 4096, "llm_proj", True, True),
}


def release_keys(kind, sizes, llm_width, with_itc=False):
    _, _, _, proj, vicuna, video = RELEASES[kind]
    keys = authors_image_keys(**sizes, llm_width=llm_width, llm_proj=proj)
    if vicuna:
        keys.update(vicuna_buffers(32, 128) if sizes is PAPER else vicuna_buffers(2, 16))
    if video:
        keys.update(temporal_keys(**sizes))
    if with_itc:
        keys.update(itc_keys(sizes["hidden"]))
    return keys


@pytest.mark.parametrize("kind", sorted(RELEASES))
def test_paper_size_releases_map_onto_every_trainable_parameter(kind, caplog):
    name, model_type, llm_width, _, vicuna, video = RELEASES[kind]
    keys = release_keys(kind, PAPER, llm_width, with_itc=True)
    trainable = 202 + (39 * 5 if video else 0)
    assert len(keys) == trainable + (32 if vicuna else 0) + 5
    model = skeleton(name, model_type)
    with caplog.at_level(logging.INFO, logger="lavis_evlgen.models.loading"):
        mapped = fit_state_dict(model, tensors(keys, "meta"), "model.finetuned", "release.pth", model.KEY_MAP)
    assert set(mapped) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(mapped) == trainable
    line = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(line) == 1
    assert "temp (1)" in line[0] and "vision_proj.* (2)" in line[0] and "text_proj.* (2)" in line[0]
    assert ("llm_model.* (32)" in line[0]) == vicuna


@pytest.mark.parametrize("kind", sorted(RELEASES))
def test_release_files_load_into_the_tiny_types_value_for_value(kind, tmp_path):
    """Small stand-ins under the release's names, saved as LAVIS's runner saves them, land in the right places."""
    name, _, _, _, _, video = RELEASES[kind]
    keys = release_keys(kind, TINY, 32)
    state = tensors(keys, seed=1)
    path = tmp_path / "release.pth"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "config": {"model": {"arch": "liptome_opt"}}, "scaler": {"scale": 65536.0}, "epoch": 3}, path)
    model = tiny(name, finetuned=str(path))
    own = model.state_dict()
    assert torch.equal(own["tomeformer.encoder.layer.1.attention.self.query.weight"],
                       state["VLconnector.encoder.layer.1.attention.self.query.weight"])
    assert torch.equal(own["tomeformer.embeddings.position_embeddings.weight"],
                       state["VLconnector.embeddings.position_embeddings.weight"])
    assert torch.equal(own["proj1.bias"], state["VL_proj.bias"])
    projection = "llm_proj" if "vicuna" in kind else "opt_proj"
    assert torch.equal(own["proj2.weight"], state[f"{projection}.weight"])
    assert torch.equal(own["ln_vision.weight"], state["ln_vision.weight"])
    if video:
        assert torch.equal(model.temporal[1].key.weight, state["visual_encoder.blocks.1.temporal_merge.key.weight"])
        assert torch.equal(model.temporal[0].gate, state["visual_encoder.blocks.0.temporal_merge.alpha"])


def test_a_release_missing_a_trainable_tensor_or_with_a_stray_key_is_one_error(tmp_path):
    keys = release_keys("video_opt", TINY, 32)
    state = tensors(keys)
    del state["visual_encoder.blocks.1.temporal_merge.alpha"]
    state["VLconnector.pooler.dense.weight"] = torch.zeros(32, 32)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"model\.finetuned.*missing trainable 1 \['temporal\.1\.gate'\].*"
                                         r"unexpected 1 \['tomeformer\.pooler\.dense\.weight'\]"):
        tiny("evlgen_video_opt", finetuned=str(tmp_path / "bad.pth"))
    state = tensors(release_keys("opt", TINY, 32))
    state["VL_proj.weight"] = torch.zeros(32, 31)
    torch.save({"model": state}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"other shape 1 \['proj1\.weight \(32, 31\)"):
        tiny("evlgen_opt", finetuned=str(tmp_path / "shape.pth"))


def test_an_image_release_is_no_video_checkpoint_but_initialises_the_image_parts(tmp_path):
    state = tensors(release_keys("opt", TINY, 32))
    torch.save({"model": state}, tmp_path / "image.pth")
    with pytest.raises(ValueError, match=r"missing trainable 10 \['temporal\.0\.gate'"):
        tiny("evlgen_video_opt", finetuned=str(tmp_path / "image.pth"))
    model = tiny("evlgen_video_opt", image_checkpoint=str(tmp_path / "image.pth"))
    assert torch.equal(model.proj2.weight, state["opt_proj.weight"])
    assert all(m.gate.item() == 0 for m in model.temporal)


class Payload:
    """Unpickling this would run code; weights_only refuses it."""

    def __reduce__(self):
        return (print, ("ran code from a checkpoint",))


def test_files_are_read_without_running_their_code(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"proj1.weight": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(ValueError, match=r"model\.pretrained.*weights_only=True"):
        read_state_dict(str(path), "model.pretrained")
    assert "ran code" not in capsys.readouterr().out
    with open(tmp_path / "garbage.pth", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(ValueError, match="model.finetuned"):
        read_state_dict(str(tmp_path / "garbage.pth"), "model.finetuned")
    torch.save({"model": {"a": [1]}}, tmp_path / "nostate.pth")
    with pytest.raises(ValueError, match="holds no state dict"):
        read_state_dict(str(tmp_path / "nostate.pth"), "model.finetuned")
    bare = {"proj1.bias": torch.ones(2)}
    torch.save(bare, tmp_path / "bare.pth")
    assert torch.equal(read_state_dict(str(tmp_path / "bare.pth"), "k")["proj1.bias"], bare["proj1.bias"])


def test_lavis_convention_chooses_finetuned_over_pretrained(tmp_path):
    ref = tiny("evlgen_opt", seed=3)
    first, second = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save({"model": trainable_state_dict(ref)}, first)
    with torch.no_grad():
        ref.proj1.weight.add_(1.0)
    torch.save({"model": trainable_state_dict(ref)}, second)
    model = tiny("evlgen_opt", seed=4)
    a, b = torch.load(first)["model"]["proj1.weight"], torch.load(second)["model"]["proj1.weight"]
    cases = [({"pretrained": str(first), "finetuned": str(second)}, b),
             ({"pretrained": str(first), "finetuned": str(second), "load_finetuned": False}, a),
             ({"pretrained": str(first)}, a)]
    for settings, expected in cases:
        load_from_config(model, OmegaConf.create(settings), EVLGEN_KEYS)
        assert torch.equal(model.proj1.weight, expected), settings
    with pytest.raises(MissingWeightsError, match="model.finetuned"):
        load_from_config(model, OmegaConf.create({"load_finetuned": True}), EVLGEN_KEYS)


def test_the_video_map_renames_only_temporal_modules_and_leaves_out_the_vit():
    mapped, left_out = EVLGEN_VIDEO_KEYS.apply({
        "visual_encoder.blocks.12.temporal_merge.alpha": torch.zeros(()),
        "visual_encoder.blocks.12.temporal_merge.query.bias": torch.zeros(2),
        "visual_encoder.blocks.12.attn.qkv.weight": torch.zeros(2),
        "temporal.3.gate": torch.zeros(()), "temp": torch.zeros(()), "llm.lm_head.weight": torch.zeros(2)})
    assert sorted(mapped) == ["temporal.12.gate", "temporal.12.query.bias", "temporal.3.gate"]
    assert left_out == {"visual_encoder.": 1, "temp": 1, "llm.": 1}


def test_missing_embedded_weights_name_the_command_that_makes_them(tmp_path, monkeypatch):
    monkeypatch.setenv("EVLGEN_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"model\.vision\.weights.*lavis_evlgen\.embedded\.prepare"):
        require_weights(str(tmp_path / "embedded" / "dinov2"), "model.vision.weights")
    with pytest.raises(MissingWeightsError) as elsewhere:
        require_weights(str(tmp_path / "mine" / "dinov2"), "model.vision.weights")
    assert "embedded.prepare" not in str(elsewhere.value)
