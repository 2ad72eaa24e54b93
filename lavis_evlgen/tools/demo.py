"""A browser demo of a trained EVLGen: caption an image, see its token-merge map, change r, ask a question.

    python -m lavis_evlgen.tools.demo [--cfg-path projects/evlgen/train/quickstart.yaml]
                                      [--checkpoint <output_dir>/<job_id>/checkpoint_best.pth]
                                      [--untrained] [--port 7860]

By default it serves the quickstart's trained model (run ``bash run_scripts/quickstart.sh`` first) on
http://127.0.0.1:7860. The model is built from the training config's ``model`` section and its trainable
weights are read from the run's best checkpoint. Bundled examples: the config's held-out test images and
the scikit-image photos. r (tokens merged per TomeFormer layer) can be changed per request: the model
was trained at one schedule, and the merge map shows what another one keeps.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from lavis.common.config import Config
from lavis.common.registry import registry
from lavis.processors import load_processor
from PIL import Image

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.checkpoint import load_checkpoint, load_trainable_state_dict
from lavis_evlgen.common.cli_config import add_config_arguments, lavis_config, model_type_config
from lavis_evlgen.common.paths import REPO_ROOT
from lavis_evlgen.models.tome import parse_r
from lavis_evlgen.tools.merge_map import colour_map, merge_map
from lavis_evlgen.tools.quickstart import build_model, photo_set

DEFAULT_CFG = REPO_ROOT / "projects/evlgen/train/quickstart.yaml"
EXAMPLES_PER_SET = 6


class DemoModel:
    """A captioning model with its image processor and r control, safe to call from several threads."""

    def __init__(self, model: torch.nn.Module, vis_processor: Any, max_len: int = 30,
                 repetition_penalty: float = 1.0):
        self.model = model.eval()
        self.vis_processor = vis_processor
        self.max_len = max_len
        self.repetition_penalty = repetition_penalty
        self._lock = threading.Lock()

    def parse_r(self, text: str) -> list[int] | None:
        """Per-layer r from the form's text: one int for every layer, or one per layer separated by commas;
        None (the trained schedule) when empty."""
        layers = self.model.tomeformer.num_layers
        try:
            values = [int(v) for v in str(text).replace(" ", "").split(",") if v != ""]
            if not values:
                return None
            return parse_r(values[0] if len(values) == 1 else values, layers)
        except ValueError as err:
            raise ValueError(f"r: give one non-negative int or {layers} comma-separated ints ({err})") from err

    def schedule(self, r: list[int] | None) -> contextlib.AbstractContextManager:
        """The TomeFormer merging ``r`` per layer (at most r per layer where it has thresholds), or as trained
        when ``r`` is None."""
        tomeformer = self.model.tomeformer
        return contextlib.nullcontext() if r is None else tomeformer.merging(r=r, threshold=tomeformer.thresholds)

    def describe(self, r: list[int] | None) -> str:
        """The schedule a request ran with, in words."""
        trained = self.model.tomeformer.describe_schedule()
        return f"trained schedule: {trained}" if r is None else f"r per layer {r}"

    def _image(self, image: Image.Image) -> torch.Tensor:
        return self.vis_processor(image.convert("RGB"))[None].to(self.model.device)

    def caption(self, image: Image.Image, num_beams: int = 1, r: str = "") -> tuple[str, Image.Image, int]:
        """Caption, merge-map overlay and visual token count of ``image`` at the given r."""
        tensor = self._image(image)
        with self._lock, self.schedule(self.parse_r(r)):
            text = self.model.generate({"image": tensor}, num_beams=int(num_beams), max_length=self.max_len,
                                       min_length=1, repetition_penalty=self.repetition_penalty)[0]
            owner = merge_map(self.model, tensor[0])
            _, atts = self.model.encode_image({"image": tensor, "condition_text": self.model.prompts_for({}, 1)})
        shown = image.convert("RGB").resize(tuple(tensor.shape[-2:][::-1]))
        return text, overlay(np.asarray(shown), owner), int(atts.sum())

    def answer(self, image: Image.Image, question: str, r: str = "") -> str:
        """Zero-shot answer to ``question`` with BLIP-2's prompt (``predict_answers``)."""
        if not question.strip():
            raise ValueError("question: empty")
        with self._lock, self.schedule(self.parse_r(r)):
            return self.model.predict_answers({"image": self._image(image), "text_input": [question]},
                                              num_beams=1)[0]


def overlay(photo: np.ndarray, owner: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """The photo [H, W, 3] with each patch tinted by the colour of the final token it merged into."""
    height, width = photo.shape[:2]
    colours = Image.fromarray((colour_map(owner) * 255).astype(np.uint8)).resize((width, height), Image.NEAREST)
    blended = (1 - alpha) * photo.astype(np.float32) + alpha * np.asarray(colours, dtype=np.float32)
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def load_demo(cfg_path: str | os.PathLike, checkpoint: Optional[str] = None, untrained: bool = False,
              options: Optional[list[str]] = None) -> tuple[DemoModel, list[str]]:
    """The model of a training config with its run's trained weights, and paths of example images.

    ``checkpoint`` defaults to ``<run.output_dir>/<run.job_id>/checkpoint_best.pth``; ``untrained`` keeps the
    freshly built connector (for a look at merging before training).
    """
    cfg = lavis_config(cfg_path, options or [])
    run = cfg.run_cfg
    model = build_model(cfg)
    if not untrained:
        path = Path(checkpoint) if checkpoint else (
            Path(run.output_dir).expanduser() / str(run.job_id) / "checkpoint_best.pth")
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint: no trained model at {path}; run `bash run_scripts/quickstart.sh` "
                                    "first, pass --checkpoint, or --untrained")
        load_trainable_state_dict(model, load_checkpoint(path)["model"], str(path))
    vis_cfg = model_type_config(cfg.model_cfg.arch, cfg.model_cfg.model_type).preprocess.vis_processor.eval
    demo = DemoModel(model, load_processor(vis_cfg.name, vis_cfg), max_len=int(run.get("max_len", 30)),
                     repetition_penalty=float(run.get("repetition_penalty", 1.0)))
    return demo, example_images(cfg)


def example_images(cfg: Config) -> list[str]:
    """A few held-out test images of the config's data set, then the bundled scikit-image photos."""
    paths = []
    for name, data_cfg in cfg.datasets_cfg.items():
        test = registry.get_builder_class(name)(data_cfg).build_datasets().get("test")
        if test is not None and hasattr(test, "annotation"):
            paths += [str(Path(test.vis_root) / a["image"]) for a in test.annotation[:EXAMPLES_PER_SET]]
    photos = photo_set(model_type_config(cfg.model_cfg.arch, cfg.model_cfg.model_type))
    return paths + [str(Path(photos.vis_root) / a["image"]) for a in photos.annotation]


def build_app(demo: DemoModel, examples: list[str]):
    """The Gradio app: caption (``/caption``) and answer (``/answer``) endpoints, one page."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def caption(image, num_beams, r):
        if image is None:
            raise gr.Error("image: upload one or pick an example")
        try:
            text, picture, tokens = demo.caption(image, num_beams, r)
        except ValueError as err:
            raise gr.Error(str(err)) from err
        return text, picture, f"{tokens} visual tokens ({demo.describe(demo.parse_r(r))})"

    def answer(image, question, r):
        if image is None:
            raise gr.Error("image: upload one or pick an example")
        try:
            return demo.answer(image, question, r)
        except ValueError as err:
            raise gr.Error(str(err)) from err

    trained = demo.model.tomeformer.r_per_layer
    with gr.Blocks(title="EVLGen demo") as app:
        gr.Markdown("## EVLGen: captions from a token-merging connector\n"
                    "The TomeFormer merges similar visual tokens in every layer; the map colours each patch "
                    "by the final token it merged into.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="image")
                gr.Examples(examples=[[p] for p in examples], inputs=[image], examples_per_page=12)
                r = gr.Textbox(value=", ".join(str(v) for v in trained or []),
                               label="r: tokens merged per layer (one int, or one per layer; empty: as trained, "
                                     f"{demo.model.tomeformer.describe_schedule()})")
                beams = gr.Radio(choices=[1, 3, 5], value=1, label="beams (1 = greedy)")
                go = gr.Button("Caption", variant="primary")
            with gr.Column():
                text = gr.Textbox(label="caption")
                tokens = gr.Textbox(label="visual tokens")
                picture = gr.Image(type="pil", format="png", label="merge map")
                question = gr.Textbox(label="question")
                ask = gr.Button("Answer")
                reply = gr.Textbox(label="answer")
        go.click(caption, inputs=[image, beams, r], outputs=[text, picture, tokens], api_name="caption")
        ask.click(answer, inputs=[image, question, r], outputs=[reply], api_name="answer")
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Browser demo of a trained EVLGen model (Gradio, localhost).")
    add_config_arguments(parser, default=str(DEFAULT_CFG), help="the training config of the model")
    parser.add_argument("--checkpoint", default=None, help="default: <run.output_dir>/<run.job_id>/checkpoint_best.pth")
    parser.add_argument("--untrained", action="store_true", help="serve the freshly built model, no checkpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    try:
        demo, examples = load_demo(args.cfg_path, args.checkpoint, args.untrained, args.options)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"EVLGen demo on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    build_app(demo, examples).launch(server_name=args.host, server_port=args.port, share=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
