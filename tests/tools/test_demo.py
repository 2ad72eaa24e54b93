"""The browser demo, served for real on a free port and driven through gradio_client."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lavis_evlgen.common.checkpoint import atomic_save, trainable_state_dict
from lavis_evlgen.tools.demo import load_demo, main


def _config(tmp_path: Path) -> Path:
    cfg = {
        "model": {"arch": "evlgen_vicuna", "model_type": "tiny"},
        "datasets": {"shapes_caption": {
            "build_info": {"root": str(tmp_path / "shapes"),
                           "generate": {"seed": 0, "n_train": 4, "n_val": 2, "n_test": 3, "image_size": 48}},
            "vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32},
                              "eval": {"name": "blip_image_eval", "image_size": 32}}}},
        "run": {"task": "evlgen_captioning", "output_dir": str(tmp_path / "out"), "job_id": "demo",
                "max_len": 6, "seed": 0},
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo")
    cfg_path = _config(tmp_path)
    trained, _ = load_demo(cfg_path, untrained=True)
    with torch.no_grad():
        trained.model.proj2.weight.normal_(generator=torch.Generator().manual_seed(1))
    ckpt = tmp_path / "out" / "demo" / "checkpoint_best.pth"
    ckpt.parent.mkdir(parents=True)
    atomic_save({"model": trainable_state_dict(trained.model)}, ckpt)

    demo, examples = load_demo(cfg_path)
    from lavis_evlgen.tools.demo import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(demo, examples)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    try:
        yield demo, trained, examples, f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def test_default_checkpoint_is_the_runs_best(served):
    demo, trained, _, _ = served
    assert torch.equal(demo.model.proj2.weight, trained.model.proj2.weight)


def test_examples_are_test_images_then_photos(served):
    _, _, examples, _ = served
    assert len(examples) == 3 + 17
    assert all(Path(p).is_file() for p in examples)
    assert "astronaut" in " ".join(examples)


def test_caption_through_the_http_api(served):
    from gradio_client import Client, handle_file

    demo, _, examples, url = served
    client = Client(url, verbose=False)
    text, picture, tokens = client.predict(handle_file(examples[0]), 1, "2", api_name="/caption")
    expected, expected_map, count = demo.caption(Image.open(examples[0]), 1, "2")
    assert text == expected
    assert tokens.startswith(f"{count} visual tokens")
    assert count == 13  # tiny ViT: 16 patches + CLS = 17, r = 2 in each of 2 layers
    served_map = np.asarray(Image.open(picture).convert("RGB"))
    assert served_map.shape == (32, 32, 3)
    assert np.abs(served_map.astype(int) - np.asarray(expected_map).astype(int)).max() == 0


def test_r_changes_the_token_count_and_restores_the_trained_schedule(served):
    demo, _, examples, _ = served
    image = Image.open(examples[1])
    _, _, fewer = demo.caption(image, 1, "4")
    _, _, none_merged = demo.caption(image, 1, "0, 0")
    assert (fewer, none_merged) == (9, 17)
    assert demo.model.tomeformer.r_per_layer == [2, 2]
    _, _, as_trained = demo.caption(image, 1, "")
    assert as_trained == 13


def test_r_control_on_a_model_trained_for_a_token_count(tmp_path):
    demo, examples = load_demo(_config(tmp_path), untrained=True, options=["model.tomeformer.tokens=5"])
    image = Image.open(examples[0])
    assert demo.caption(image, 1, "")[2] == 5
    assert demo.caption(image, 1, "4")[2] == 9
    assert demo.model.tomeformer.target_tokens == 5 and demo.model.tomeformer.r_per_layer is None
    assert demo.caption(image, 1, "")[2] == 5
    assert demo.describe(None) == "trained schedule: 5 tokens"


def test_bad_r_is_an_error_naming_the_field(served):
    from gradio_client import Client, handle_file

    demo, _, examples, url = served
    with pytest.raises(ValueError, match="r: give one non-negative int or 2"):
        demo.parse_r("1, 2, 3")
    with pytest.raises(Exception, match="r: give one"):
        Client(url, verbose=False).predict(handle_file(examples[0]), 1, "x", api_name="/caption")


def test_answer_through_the_http_api(served):
    from gradio_client import Client, handle_file

    demo, _, examples, url = served
    reply = Client(url, verbose=False).predict(handle_file(examples[0]), "what shape?", "", api_name="/answer")
    assert reply == demo.answer(Image.open(examples[0]), "what shape?")


def test_missing_checkpoint_says_how_to_make_one(tmp_path, capsys):
    assert main(["--cfg-path", str(_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint: no trained model at" in err and "quickstart.sh" in err
