"""Can EVLGen-Video caption the direction of motion? The paper's module vs. the same with frame positions.

    python projects/evlgen_video/direction_demo.py [--steps 3000] [--out output/direction_demo.json]

Trains two tiny EVLGen-Video models (``evlgen_video_opt`` type ``tiny``, frame aggregation
``temporal+mean``) with the same seed, data and schedule on generated moving-shapes clips whose
captions name colour, shape and direction ("a red circle moves left"):

* ``paper``: the temporal contextualizer as in the paper (``model.temporal.frame_positions: 0``);
* ``frame_positions``: the same with a learned frame-position embedding in the contextualizer.

The test clips come in reversal pairs (clip 2i+1 is clip 2i played backwards, moving the opposite
way). Averaged over frames, the paper's module gives a clip and its reverse the same visual prompt,
hence the same caption, so it names the direction of at most one clip of each pair; with frame
positions both can be right. Printed per model: direction accuracy, colour+shape accuracy, pairs
whose two captions are identical, and pairs with both directions right.

The frozen parts are the tiny model type's random ViT and a random OPT-style LLM over a word-level
vocabulary (``lavis_evlgen.models.word_tokenizer``): a random byte-level LLM cannot be steered into
whole words in a CPU-sized run. Every frame of each 8-frame clip is used (decoded once, kept in memory),
so a test clip's frames are exactly its partner's in reverse order; sampling 4 of the 8 would pick
different frames from the two (segment centres are not symmetric under reversal) and leak direction.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.cli_config import model_type_config
from lavis_evlgen.common.paths import cache_dir, config_path
from lavis_evlgen.datasets.generate.moving_shapes import DIRECTIONS
from lavis_evlgen.datasets.generate.shapes_scene import COLORS, SHAPES
from lavis_evlgen.models.word_tokenizer import write_word_tokenizer

WORDS = ["a", "the", "moves", "moving", "to", "goes", *COLORS, *SHAPES, *DIRECTIONS]
DATA = {"seed": 0, "n_train": 400, "n_val": 2, "n_test": 80, "image_size": 32, "num_frames": 8, "fps": 8}


def clips(root: Path) -> dict:
    """Train and test splits of the moving-shapes set (every frame), decoded once into tensors."""
    cfg = OmegaConf.load(config_path("datasets/moving_shapes_caption/defaults.yaml")).datasets.moving_shapes_caption
    cfg.build_info.root = str(root)
    cfg.build_info.generate = DATA
    for split in ("train", "eval"):
        cfg.vis_processor[split].update(image_size=DATA["image_size"], n_frms=DATA["num_frames"], sampling="uniform")
    datasets = registry.get_builder_class("moving_shapes_caption")(cfg).build_datasets()
    out = {}
    for split in ("train", "test"):
        ds = datasets[split]
        batch = ds.collater([ds[i] for i in range(len(ds))])
        out[split] = {"video": batch["video"], "text": batch.get("text_input"), "annotation": ds.annotation}
    return out


def build(tokenizer: str, vocab_size: int, frame_positions: int, seed: int):
    cls = registry.get_model_class("evlgen_video_opt")
    cfg = model_type_config("evlgen_video_opt", "tiny").model
    cfg.temporal.frame_positions = frame_positions
    cfg.llm.tokenizer = tokenizer
    cfg.llm.config.update(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2, init_std=0.2,
                          hidden_size=64, word_embed_proj_dim=64, ffn_dim=128)
    torch.manual_seed(seed)
    return cls.from_config(cfg)


def train(model, data: dict, steps: int, batch_size: int, lr: float, seed: int) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    video, text = data["video"], data["text"]
    losses, step = [], 0
    model.train()
    while step < steps:
        order = torch.randperm(len(text), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            loss = model({"video": video[rows], "text_input": [text[i] for i in rows]})["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
            if step == steps:
                break
    return losses


@torch.no_grad()
def evaluate(model, data: dict) -> dict:
    model.eval()
    captions = model.generate({"video": data["video"]}, num_beams=1, max_length=8, min_length=1)
    anns = data["annotation"]
    direction = [a["direction"] in c.split() for a, c in zip(anns, captions)]
    thing = [a["color_kind"] in c for a, c in zip(anns, captions)]
    pairs = range(0, len(anns), 2)
    return {
        "direction_accuracy": sum(direction) / len(anns),
        "color_shape_accuracy": sum(thing) / len(anns),
        "identical_pair_captions": sum(captions[i] == captions[i + 1] for i in pairs) / len(pairs),
        "pairs_both_directions_right": sum(direction[i] and direction[i + 1] for i in pairs) / len(pairs),
        "examples": [{"direction": a["direction"], "caption": c} for a, c in zip(anns[:6], captions[:6])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", type=Path, default=cache_dir() / "direction_demo")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer, vocab_size = write_word_tokenizer(WORDS, args.root / "word_tokenizer")
    data = clips(args.root)
    results = {"settings": {**vars(args), "root": str(args.root), "out": str(args.out), "data": DATA}}
    for name, positions in (("paper", 0), ("frame_positions", DATA["num_frames"])):
        model = build(tokenizer, vocab_size, positions, args.seed)
        start = time.time()
        losses = train(model, data["train"], args.steps, args.batch_size, args.lr, args.seed)
        results[name] = {**evaluate(model, data["test"]), "final_loss": sum(losses[-50:]) / len(losses[-50:]),
                         "train_seconds": round(time.time() - start, 1),
                         "gates": [round(float(m.gate), 4) for m in model.temporal]}
        print(f"{name:16s} direction {results[name]['direction_accuracy']:.3f}  colour+shape "
              f"{results[name]['color_shape_accuracy']:.3f}  identical pair captions "
              f"{results[name]['identical_pair_captions']:.3f}  pairs both right "
              f"{results[name]['pairs_both_directions_right']:.3f}  loss {results[name]['final_loss']:.3f}  "
              f"({results[name]['train_seconds']:.0f} s)", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
