"""The converted SmolLM2 checkpoint: the GGUF's dequantised weights, answers "Paris", sane tokenizer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors import safe_open
from transformers import AutoTokenizer, LlamaForCausalLM

from lavis_evlgen.embedded.sources import SMOLLM2, locate

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llm(embedded_paths):
    torch.set_num_threads(2)
    model = LlamaForCausalLM.from_pretrained(embedded_paths.llm_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(embedded_paths.llm_dir, local_files_only=True)
    return model, tokenizer


def test_greedy_answer_is_paris(llm):
    model, tokenizer = llm
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    answer = tokenizer.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
    assert answer.strip().startswith("Paris"), answer


@pytest.fixture(scope="module")
def gguf_tensors():
    return {tensor.name: tensor for tensor in GGUFReader(str(locate(SMOLLM2)[0])).tensors}


@pytest.mark.parametrize("ours,theirs", [
    ("model.embed_tokens.weight", "token_embd.weight"),  # Q8_0
    ("model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"),  # Q4_1
    ("model.layers.29.self_attn.v_proj.weight", "blk.29.attn_v.weight"),  # Q4_1
    ("model.layers.7.input_layernorm.weight", "blk.7.attn_norm.weight"),  # F32
])
def test_saved_tensors_equal_gguf_dequantised(embedded_paths, gguf_tensors, ours, theirs):
    tensor = gguf_tensors[theirs]
    expected = dequantize(tensor.data, tensor.tensor_type)
    with safe_open(str(embedded_paths.llm_dir / "model.safetensors"), framework="np") as saved:
        np.testing.assert_array_equal(saved.get_tensor(ours), expected)


def test_plain_fp32_checkpoint(llm, embedded_paths):
    model, _ = llm
    config = json.loads((embedded_paths.llm_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert model.dtype == torch.float32
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert not (embedded_paths.llm_dir / "tokenizer.model").exists()


def test_tokenizer_follows_gguf_metadata(llm):
    model, tokenizer = llm
    assert tokenizer(PROMPT).input_ids[0] != tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == model.generation_config.eos_token_id == 2
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")
