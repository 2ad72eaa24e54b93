"""Calibrate threshold merging: per-layer similarity thresholds that hit a target mean token count.

    python -m lavis_evlgen.tools.calibrate_merging --cfg-path projects/evlgen/train/quickstart.yaml \\
        --target-tokens 29 [--images 64] [--checkpoint PATH] [--out thresholds.yaml] [--options ...]

The fixed schedule that ends at the target (``r_for_tokens``) says how many tokens remain after each layer;
layer by layer, the threshold is set (by bisection) so that on a batch of training images the mean count
after that layer is the fixed schedule's, with r raised to ``--cap-factor`` times the fixed r as the cap,
so simple images can merge more than the fixed r and busy ones less (DyMU's calibration, applied to a
TomeFormer). The images are a seeded sample of the config's first training split; the connector is the
freshly built one, or the trained one from ``--checkpoint``. Prints (and with ``--out`` writes) the
``model.tomeformer.r`` caps and ``threshold`` list, and the token counts they give on the sample.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import torch
import yaml
from lavis.common.config import Config
from lavis.common.registry import registry

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.checkpoint import load_checkpoint, load_trainable_state_dict
from lavis_evlgen.common.cli_config import add_config_arguments, load_config
from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.models.tome import (
    NO_MERGE,
    bipartite_soft_matching,
    merge_mask,
    pad_tokens,
    r_for_tokens,
    token_counts,
)
from lavis_evlgen.models.tomeformer import TomeFormer

Batch = tuple[torch.Tensor, torch.Tensor | None]
BISECTION_STEPS = 24


@torch.no_grad()
def calibrate_thresholds(tomeformer: TomeFormer, batches: Sequence[Batch], target: int,
                         cap_factor: float = 2.0) -> tuple[list[int], list[float]]:
    """Per-layer caps (r) and thresholds giving a mean of about ``target`` tokens on ``batches``.

    batches: TomeFormer inputs, (x [B, N, H], attention_mask [B, N] or None), all with the same N. The
    TomeFormer's own schedule is restored afterwards.
    """
    if cap_factor < 1:
        raise ValueError(f"--cap-factor must be at least 1, got {cap_factor}")
    lengths = {x.shape[1] for x, _ in batches}
    if len(lengths) != 1:
        raise ValueError(f"calibration batches must share one token count, got {sorted(lengths)}")
    num_tokens, layers = lengths.pop(), tomeformer.num_layers
    reference = r_for_tokens(num_tokens, target, layers, tomeformer.class_token)
    goals = token_counts(num_tokens, reference, tomeformer.class_token)
    caps = [math.ceil(cap_factor * r) for r in reference]
    training = tomeformer.training
    tomeformer.eval()
    thresholds: list[float] = []
    try:
        for layer in range(layers):
            # Layers before this one merge as calibrated; this one and the later ones not at all, so the
            # output mask is this layer's input mask, in the order of the keys captured below.
            with tomeformer.merging(r=caps[:layer] + [0] * (layers - layer),
                                    threshold=thresholds + [None] * (layers - layer)):
                metrics, masks = _layer_metrics(tomeformer, batches, layer)
            thresholds.append(_bisect(metrics, masks, caps[layer], tomeformer.class_token, goals[layer]))
    finally:
        tomeformer.train(training)
    return caps, thresholds


def _layer_metrics(tomeformer: TomeFormer, batches: Sequence[Batch],
                   layer: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The merge metric (keys averaged over heads) of ``layer`` and its token mask, per batch."""
    heads = tomeformer.config.num_attention_heads
    captured = []

    def keep(module, inputs, output):
        batch, tokens, hidden = output.shape
        captured.append(output.view(batch, tokens, heads, hidden // heads).transpose(1, 2).mean(dim=1))

    handle = tomeformer.encoder["layer"][layer].attention.self.key.register_forward_hook(keep)
    masks = []
    try:
        for x, mask in batches:
            masks.append(tomeformer(x, mask).attention_mask.bool())
    finally:
        handle.remove()
    return captured, masks


def _mean_tokens(metrics: list[torch.Tensor], masks: list[torch.Tensor], cap: int, class_token: bool,
                 threshold: float) -> float:
    total = count = 0
    for metric, mask in zip(metrics, masks):
        padded = pad_tokens(mask, 2 * cap)
        merge, _ = bipartite_soft_matching(pad_tokens(metric, 2 * cap), cap, class_token, padded, threshold)
        total += int(merge_mask(merge, padded).sum())
        count += mask.shape[0]
    return total / count


def _bisect(metrics: list[torch.Tensor], masks: list[torch.Tensor], cap: int, class_token: bool,
            goal: int) -> float:
    """The threshold whose mean token count after the layer is nearest ``goal`` (the count grows with it)."""
    low, high = -1.0, NO_MERGE
    at_low = _mean_tokens(metrics, masks, cap, class_token, low)
    at_high = _mean_tokens(metrics, masks, cap, class_token, high)
    for _ in range(BISECTION_STEPS):
        if at_high - at_low <= 0 or at_low >= goal or at_high <= goal:
            break
        middle = (low + high) / 2
        count = _mean_tokens(metrics, masks, cap, class_token, middle)
        if count < goal:
            low, at_low = middle, count
        else:
            high, at_high = middle, count
    return low if abs(at_low - goal) < abs(at_high - goal) else high


@torch.no_grad()
def connector_inputs(model: torch.nn.Module, dataset, images: int, batch_size: int, seed: int) -> list[Batch]:
    """TomeFormer inputs (proj1(ln_vision(ViT tokens))) of a seeded sample of ``images`` from ``dataset``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(dataset), generator=generator)[:images].tolist()
    batches = []
    for start in range(0, len(chosen), batch_size):
        samples = dataset.collater([dataset[i] for i in chosen[start:start + batch_size]])
        if "image_features" in samples:
            feats = samples["image_features"].float().to(model.device)
        else:
            feats = model.vision_features(samples["image"].to(model.device))
        batches.append((model.proj1(model.ln_vision(feats)), samples.get("image_features_mask")))
    return batches


def summary(tomeformer: TomeFormer, batches: Sequence[Batch]) -> dict[str, float]:
    """Mean, min and max output tokens per image on ``batches``."""
    was_training = tomeformer.training
    tomeformer.eval()
    with torch.no_grad():
        counts = torch.cat([tomeformer(x, mask).attention_mask.sum(dim=1) for x, mask in batches]).float()
    tomeformer.train(was_training)
    return {"mean": round(float(counts.mean()), 2), "min": int(counts.min()), "max": int(counts.max())}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--target-tokens", type=int, required=True, help="mean output tokens per image")
    parser.add_argument("--images", type=int, default=64, help="training images to calibrate on")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cap-factor", type=float, default=2.0, help="cap r at this many times the fixed r")
    parser.add_argument("--checkpoint", default=None, help="trained weights (default: the freshly built connector)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    parser.add_argument("--out", default=None, help="also write the values to this YAML file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        load_config(args.cfg_path, args.options)
        cfg = Config(argparse.Namespace(cfg_path=args.cfg_path, options=list(args.options)))
        model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg).eval()
        if args.checkpoint:
            load_trainable_state_dict(model, load_checkpoint(args.checkpoint)["model"], args.checkpoint)
        split = (cfg.run_cfg.get("train_splits") or ["train"])[0]
        name, data_cfg = next(iter(cfg.datasets_cfg.items()))
        dataset = registry.get_builder_class(name)(data_cfg).build_datasets()[split]
        batches = connector_inputs(model, dataset, args.images, args.batch_size, args.seed)
        caps, thresholds = calibrate_thresholds(model.tomeformer, batches, args.target_tokens, args.cap_factor)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    fixed = summary(model.tomeformer, batches)
    model.tomeformer.set_merge_schedule(r=caps, threshold=[round(t, 6) for t in thresholds])
    adaptive = summary(model.tomeformer, batches)
    values = {"model": {"tomeformer": {"r": caps, "threshold": [round(t, 6) for t in thresholds]}}}
    print(yaml.safe_dump(values, default_flow_style=None, sort_keys=False), end="")
    print(f"# {sum(x.shape[0] for x, _ in batches)} images of {name}/{split}: tokens per image with these values "
          f"{adaptive} (the config's own schedule: {fixed})")
    if args.out:
        Path(args.out).write_text(yaml.safe_dump(values, default_flow_style=None, sort_keys=False))
        print(f"# written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
