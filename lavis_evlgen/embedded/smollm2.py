"""GGUF -> safetensors: SmolLM2-135M-Instruct as a plain fp32 ``LlamaForCausalLM`` checkpoint.

transformers 4.51.3 (with the ``gguf`` package) dequantises the Q4_1 GGUF into an fp32 model with
no quantizer attached, so ``save_pretrained`` writes a plain checkpoint (about 538 MB; the output
embedding is tied to the input one and stored once).

Its GGUF tokenizer conversion misreads two settings that the GGUF metadata states plainly: it
makes ``<|im_start|>`` the end-of-sequence token and prepends it to every text, while the file says
``tokenizer.ggml.add_bos_token = False`` and eos = pad = ``<|im_end|>`` (id 2, as in the model's
generation config). Those settings are re-applied from the metadata before saving, so generation
stops at ``<|im_end|>`` and prompts are not prefixed. Only ``tokenizer.json`` is saved (the slow
tokenizer "vocabulary" would be a 98 MB copy of the GGUF file itself).
"""
from __future__ import annotations

from pathlib import Path

import torch
from gguf import GGUFReader
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

CONVERTER = "smollm2-from-gguf/1"


def _metadata(gguf_path: Path, keys: tuple[str, ...]) -> dict:
    fields = GGUFReader(str(gguf_path)).fields
    missing = [key for key in keys if key not in fields]
    if missing:
        raise ValueError(f"{gguf_path}: GGUF metadata lacks {missing}")
    return {key: fields[key].contents() for key in keys}


def load_tokenizer(gguf_path: Path) -> PreTrainedTokenizerFast:
    """The GGUF's tokenizer with BOS insertion and eos/pad/bos tokens as its metadata says."""
    meta = _metadata(gguf_path, ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id",
                                 "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"))
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    tokenizer.bos_token = tokenizer.convert_ids_to_tokens(int(meta["tokenizer.ggml.bos_token_id"]))
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(meta["tokenizer.ggml.eos_token_id"]))
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(meta["tokenizer.ggml.padding_token_id"]))
    tokenizer.add_bos_token = bool(meta["tokenizer.ggml.add_bos_token"])
    return tokenizer


def load_model(gguf_path: Path) -> LlamaForCausalLM:
    """The GGUF's weights, dequantised to fp32 (about 10-15 s on 2 CPU cores)."""
    model = LlamaForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, torch_dtype=torch.float32, local_files_only=True)
    if getattr(model.config, "quantization_config", None) is not None:
        raise ValueError(f"{gguf_path}: transformers kept a quantization_config; expected a plain fp32 model")
    return model.eval()


def write_smollm2(gguf_path: Path, out_dir: Path) -> dict:
    """Save model (safetensors), generation config and fast tokenizer into ``out_dir``."""
    tokenizer = load_tokenizer(gguf_path)
    model = load_model(gguf_path)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir, legacy_format=False)
    config = model.config
    return {
        "architecture": "LlamaForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
        "eos_token": tokenizer.eos_token,
        "add_bos_token": tokenizer.add_bos_token,
    }
