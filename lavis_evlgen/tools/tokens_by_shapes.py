"""Tokens per image against the number of shapes in it, under threshold merging.

    python -m lavis_evlgen.tools.tokens_by_shapes --cfg-path projects/evlgen/train/quickstart.yaml \\
        [--target-tokens 29] [--checkpoint PATH] [--images 64] [--options ...]

With ``--target-tokens``, calibrates thresholds (``calibrate_merging``) on a seeded sample of the generated
shapes' training images; without, merges as the model (and checkpoint) says, e.g. by the running thresholds of
a connector trained with ``model.tomeformer.mean_tokens``. Then counts the tokens the TomeFormer keeps for every
test image and groups them by the number of shapes in the scene (``scenes.json``). Reads the frozen ViT
features from the feature cache (computed there if absent).
Prints a table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch
from lavis.common.config import Config
from lavis.common.registry import registry
from omegaconf import OmegaConf

from lavis_evlgen.common.checkpoint import load_checkpoint, load_trainable_state_dict
from lavis_evlgen.common.cli_config import add_config_arguments, load_config
from lavis_evlgen.common.paths import cache_dir
from lavis_evlgen.datasets.feature_cache import CachedFeaturesDataset, cache_features
from lavis_evlgen.tools.calibrate_merging import calibrate_thresholds, connector_inputs

DATASET = "shapes_caption"


def cached(model, model_cfg, dataset) -> CachedFeaturesDataset:
    """The dataset served from the feature cache, keyed as ``runner_evlgen`` keys it."""
    encoder_id = f"{model_cfg.arch}\n{OmegaConf.to_yaml(model_cfg.get('vision', {}), resolve=True)}"
    folder = cache_features(dataset, lambda images: model.vision_features(images.to(model.device)), encoder_id,
                            cache_dir() / "features")
    return CachedFeaturesDataset(dataset, folder)


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_config_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--target-tokens", type=int, default=None,
                        help="calibrate thresholds for this mean count (default: the model's own schedule)")
    parser.add_argument("--images", type=int, default=64, help="training images to calibrate on")
    parser.add_argument("--cap-factor", type=float, default=2.0)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args(argv)
    load_config(args.cfg_path, args.options)
    cfg = Config(argparse.Namespace(cfg_path=args.cfg_path, options=list(args.options)))
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg).eval()
    if args.checkpoint:
        load_trainable_state_dict(model, load_checkpoint(args.checkpoint)["model"], args.checkpoint)
    splits = registry.get_builder_class(DATASET)(cfg.datasets_cfg[DATASET]).build_datasets()
    train, test = (cached(model, cfg.model_cfg, splits[name]) for name in ("train", "test"))
    caps = thresholds = None
    if args.target_tokens is not None:
        calibration = connector_inputs(model, train, args.images, 16, seed=0)
        caps, thresholds = calibrate_thresholds(model.tomeformer, calibration, args.target_tokens, args.cap_factor)
        model.tomeformer.set_merge_schedule(r=caps, threshold=thresholds)
    schedule = model.tomeformer.describe_schedule()
    scenes = json.loads((Path(test.vis_root) / "scenes.json").read_text())["test"]
    shapes = {scene["image_id"]: len(scene["shapes"]) for scene in scenes}
    by_count = defaultdict(list)
    with torch.no_grad():
        for index, ann in enumerate(test.annotation):
            feats = test[index]["image_features"][None].to(model.device)
            tokens = model.tomeformer(model.proj1(model.ln_vision(feats))).attention_mask.sum().item()
            by_count[shapes[ann["image_id"]]].append(int(tokens))
    rows = {n: {"images": len(v), "mean": round(sum(v) / len(v), 2), "min": min(v), "max": max(v)}
            for n, v in sorted(by_count.items())}
    every = [t for v in by_count.values() for t in v]
    print(f"merging: {schedule}")
    print("shapes  images  mean tokens  min  max")
    for n, row in rows.items():
        print(f"{n:>6}  {row['images']:>6}  {row['mean']:>11}  {row['min']:>3}  {row['max']:>3}")
    print(f"   all  {len(every):>6}  {sum(every) / len(every):>11.2f}  {min(every):>3}  {max(every):>3}")
    print(json.dumps({"target_tokens": args.target_tokens, "calibration_images": args.images,
                      "checkpoint": args.checkpoint, "schedule": schedule, "caps": caps, "thresholds": thresholds,
                      "by_shapes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
