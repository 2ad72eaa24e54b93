"""Connector MACs of the tiny configs against hand counts (every matrix product written out)."""
import json
from math import ceil, floor

import pytest
import torch.distributed as dist
import yaml
from omegaconf import OmegaConf

from lavis_evlgen.models.llm import build_llm
from lavis_evlgen.tools import flops

# Tiny shapes (lavis_evlgen/configs/models/*/tiny.yaml): ViT 16 patches + CLS = 17 tokens of width 32; connector width
# H = 32 with 2 heads (head_dim 16) and FFN 64, 2 layers; LLM width 32.
N, D_VIT, H, HEAD, FFN, D_LLM = 17, 32, 32, 16, 64, 32


def linear(tokens, d_in, d_out):
    return tokens * d_in * d_out


def self_attention(tokens_q, tokens_k=None):
    """Q, K, V and output projections, plus Q.K^T and A.V (keys may include cached ones)."""
    tokens_k = tokens_q if tokens_k is None else tokens_k
    new_kv = tokens_q  # K and V are projected only for the new tokens
    return (linear(tokens_q, H, H) + 2 * linear(new_kv, H, H) + linear(tokens_q, H, H)
            + 2 * tokens_q * tokens_k * H)


def cross_attention(queries):
    return linear(queries, H, H) + 2 * linear(N, D_VIT, H) + 2 * queries * N * H + linear(queries, H, H)


def ffn(tokens):
    return linear(tokens, H, FFN) + linear(tokens, FFN, H)


@pytest.fixture(autouse=True, scope="module")
def no_leftover_group():
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def count(tmp_path, arch, capsys, batch=2, options=(), **run):
    cfg = {"model": {"arch": arch, "model_type": "tiny"}}
    if run:
        cfg["run"] = run
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    extra = ["--options", *options] if options else []
    assert flops.main(["--cfg-path", str(path), "--json", "--batch", str(batch), *extra]) == 0
    [stage] = json.loads(capsys.readouterr().out)
    return stage


def test_evlgen_tiny_matches_hand_count(tmp_path, capsys):
    """r = 2 per layer: 17 -> 15 -> 13 tokens; attention and FFN see the merged counts; ToMe's key
    similarity is ceil(T/2) x floor(T/2) x head_dim."""
    t0, t1, t2 = 17, 15, 13
    layer = [self_attention(t) + ceil(t / 2) * floor(t / 2) * HEAD + ffn(t_out)
             for t, t_out in ((t0, t1), (t1, t2))]
    expected = linear(N, D_VIT, H) + sum(layer) + linear(t2, H, D_LLM)
    stage = count(tmp_path, "evlgen_opt", capsys)
    assert stage["stage"] == "EVLGen"
    assert stage["macs_per_sample"] == expected == 311_424
    assert stage["tokens_per_layer"] == [15, 13] and stage["connector_tokens"] == 13
    assert stage["passes"][0]["macs_per_sample"] == sum(layer)
    assert stage["calls_per_step"] == 1 and stage["sample_passes_per_sample"] == 1


def test_token_count_schedule_lists_the_tokens_after_each_layer(tmp_path, capsys):
    """With a final token count instead of r, the widths come from the connector itself: 17 -> 9 in 2 layers."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "evlgen_opt", "model_type": "tiny"}}))
    assert flops.main(["--cfg-path", str(path), "--json", "--options", "model.tomeformer.tokens=9"]) == 0
    [stage] = json.loads(capsys.readouterr().out)
    assert stage["tokens_per_layer"][-1] == stage["connector_tokens"] == 9
    assert len(stage["tokens_per_layer"]) == 2 and stage["tokens_per_layer"][0] < 17


def test_mean_tokens_counts_the_mean_schedule(tmp_path, capsys):
    """Thresholds tracked for a mean of 9 tokens: counted as the fixed schedule with that mean (an untrained
    connector merges by it, and a trained one's mean count is the target)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "evlgen_opt", "model_type": "tiny"}}))
    stages = []
    for option in ("model.tomeformer.mean_tokens=9", "model.tomeformer.tokens=9"):
        assert flops.main(["--cfg-path", str(path), "--json", "--options", option]) == 0
        stages += json.loads(capsys.readouterr().out)
    assert stages[0]["connector_tokens"] == 9
    assert stages[0]["tokens_per_layer"] == stages[1]["tokens_per_layer"]
    assert stages[0]["macs_per_sample"] == stages[1]["macs_per_sample"]


def test_registers_join_attention_and_all_but_the_last_mlp(tmp_path, capsys):
    """Two register tokens: every layer attends over T + 2 tokens, the merge similarity and the projection to
    the LLM see the visual tokens only, and the registers skip the last layer's MLP (nothing reads them after)."""
    t0, t1, t2, regs = 17, 15, 13, 2
    layer = [self_attention(t0 + regs) + ceil(t0 / 2) * floor(t0 / 2) * HEAD + ffn(t1) + ffn(regs),
             self_attention(t1 + regs) + ceil(t1 / 2) * floor(t1 / 2) * HEAD + ffn(t2)]
    stage = count(tmp_path, "evlgen_opt", capsys, options=[f"model.tomeformer.registers={regs}"])
    assert stage["macs_per_sample"] == linear(N, D_VIT, H) + sum(layer) + linear(t2, H, D_LLM)
    assert stage["tokens_per_layer"] == [15, 13] and stage["connector_tokens"] == 13


def test_blip2_stage2_tiny_matches_hand_count(tmp_path, capsys):
    """4 queries; layer 0 has cross-attention to the 17 ViT tokens (cross_attention_freq 2), layer 1 not."""
    q = 4
    qformer = (self_attention(q) + cross_attention(q) + ffn(q)) + (self_attention(q) + ffn(q))
    stage = count(tmp_path, "blip2_stage2_llama", capsys)
    assert stage["macs_per_sample"] == qformer + linear(q, H, D_LLM) == 119_040
    assert stage["passes"][0]["macs_per_sample"] == qformer


def test_blip2_stage1_tiny_matches_hand_count(tmp_path, capsys):
    """Four Q-Former calls per step, six sample-passes per sample: queries (ITC), caption (ITC), queries +
    caption on 3x the batch (ITM), caption decoder over cached queries (ITG); then heads and the LM head."""
    q, t, batch, embed, vocab = 4, 16, 2, 16, 30523  # max_txt_len 16, embed_dim 16, vocab + [DEC]
    queries = (self_attention(q) + cross_attention(q) + ffn(q)) + (self_attention(q) + ffn(q))
    text = 2 * (self_attention(t) + ffn(t))
    itm = ((self_attention(q + t) + cross_attention(q) + ffn(q) + ffn(t))
           + (self_attention(q + t) + ffn(q) + ffn(t)))
    itg = 2 * (self_attention(t, tokens_k=q + t) + ffn(t))
    heads = (linear(q, H, embed) + linear(1, H, embed)          # vision_proj on queries, text_proj on [CLS]
             + 2 * batch * q * embed                            # ITC similarities, both directions
             + 3 * linear(q, H, 2)                              # ITM head on the 3x batch's queries
             + linear(t, H, H) + linear(t, H, vocab))           # LM head: transform + decoder
    stage = count(tmp_path, "blip2_stage1", capsys, batch=batch)
    by_name = {p["pass"].split(":")[0]: p for p in stage["passes"]}
    assert by_name["queries over the image (ITC)"]["macs_per_sample"] == queries
    assert by_name["ITC"]["macs_per_sample"] == text
    assert by_name["ITM"]["macs_per_sample"] == 3 * itm and by_name["ITM"]["batch_multiple"] == 3
    assert by_name["ITG"]["macs_per_sample"] == itg
    assert stage["other_macs_per_sample"] == heads
    assert stage["macs_per_sample"] == queries + text + 3 * itm + itg + heads
    assert stage["calls_per_step"] == 4 and stage["sample_passes_per_sample"] == 6


def test_schedule_totals_use_the_global_batch(tmp_path, capsys):
    stage = count(tmp_path, "evlgen_opt", capsys, max_iters=10, batch_size_train=3, world_size=4,
                  accum_grad_iters=2)
    assert stage["run"]["global_batch"] == 24
    assert stage["run"]["connector_macs_forward"] == stage["macs_per_sample"] * 24 * 10
    stage = count(tmp_path, "evlgen_opt", capsys, max_iters=10, batch_size_train=3, global_batch_size=12)
    assert stage["run"]["global_batch"] == 12


def test_markdown_table_and_comparison_configs(tmp_path, capsys):
    cfg = {"compare": {"model_type": "tiny"},  # the model type of methods that name none
           "methods": {"a": {"model": {"arch": "evlgen_vicuna"}},
                       "b": {"model": {"arch": "blip2_stage2_opt", "model_type": "tiny"}}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert flops.main(["--cfg-path", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| EVLGen | EVLGenVicuna | 17 x 32 | 13 | 311.42 k |" in out
    assert "| BLIP-2 stage 2 | Blip2Stage2OPT | 17 x 32 | 4 | 119.04 k |" in out


def test_bad_inputs_are_named(tmp_path, capsys):
    assert flops.main(["--cfg-path", str(tmp_path / "none.yaml")]) == 2
    assert "--cfg-path" in capsys.readouterr().err
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"run": {}}))
    assert flops.main(["--cfg-path", str(path)]) == 2
    assert "methods" in capsys.readouterr().err
    # Stage 1's in-batch ITC/ITM: its declared MIN_BATCH is 2.
    assert flops.main(["--cfg-path", str(path), "--batch", "1", "--options", "model.arch=blip2_stage1",
                       "model.model_type=tiny"]) == 2
    assert "--batch: BLIP-2 stage 1 needs at least 2" in capsys.readouterr().err


def test_the_tool_asks_the_model_what_to_count(tmp_path, capsys, monkeypatch):
    """A model that points CONNECTOR at another module is counted there, without editing the tool."""
    from lavis_evlgen.models.evlgen import EVLGen

    monkeypatch.setattr(EVLGen, "CONNECTOR", "proj1")
    monkeypatch.setattr(EVLGen, "STAGE", "EVLGen, f_proj1 as the connector")
    stage = count(tmp_path, "evlgen_opt", capsys)
    assert stage["stage"] == "EVLGen, f_proj1 as the connector"
    assert [p["pass"] for p in stage["passes"]] == ["Linear"]
    assert stage["passes"][0]["macs_per_sample"] == linear(N, D_VIT, H)
    assert stage["macs_per_sample"] == 311_424  # the whole encode_image is still counted
    monkeypatch.delattr(EVLGen, "MIN_BATCH")
    path = tmp_path / "cfg.yaml"
    assert flops.main(["--cfg-path", str(path)]) == 2
    assert "does not declare MIN_BATCH" in capsys.readouterr().err


def test_an_llm_folder_config_with_its_model_type_becomes_a_stand_in(tmp_path):
    # A saved transformers config.json names its model_type, which the family already gives the stand-in.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                      "num_attention_heads": 2, "torch_dtype": "float32"}))
    cfg = OmegaConf.create({"llm": {"family": "llama", "path": str(tmp_path)}})
    flops._llm_stand_in(cfg)
    assert "model_type" not in cfg.llm.config and cfg.llm.config.hidden_size == 64 and cfg.llm.path is None
    model, _ = build_llm(cfg.llm)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 0
