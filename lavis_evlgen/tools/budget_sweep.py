"""One checkpoint evaluated at several final token counts: CIDEr and grounding per budget.

    python -m lavis_evlgen.tools.budget_sweep --cfg-path projects/evlgen/train/quickstart.yaml \\
        --checkpoint output/quickstart/checkpoint_best.pth --tokens 9,17,29,45 [--out DIR] [--options ...]

Made for a connector trained with ``model.tomeformer.random_tokens`` (one model, many budgets), and works for
any: before each pass it sets the TomeFormer's schedule with ``set_merge_schedule(tokens=k)``, captions every
test image of the generated shapes from the feature cache with the run's generation settings (``num_beams``,
``max_len``, ``min_len``, ``repetition_penalty``, as the captioning task reads them), and scores the captions
as the quickstart does: CIDEr on all test images and on the held-out colour-shape pairs, distinct captions and
shapes named exactly. Prints a table and a JSON line; ``--out`` keeps the captions and scores per budget.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from lavis.common.config import Config
from lavis.common.registry import registry

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.checkpoint import load_checkpoint, load_trainable_state_dict
from lavis_evlgen.common.cli_config import add_config_arguments, load_config
from lavis_evlgen.tasks.captioning import EvlgenCaptionTask
from lavis_evlgen.tools.quickstart import build_model, caption_all, grounding, subset_scores
from lavis_evlgen.tools.tokens_by_shapes import DATASET, cached


def budgets(text: str) -> list[int]:
    """``--tokens``: comma-separated positive token counts."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tokens: expected comma-separated integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--tokens: token counts must be at least 1, got '{text}'")
    return values


def evaluate_budget(model, test, run_cfg, tokens: int, batch_size: int, out_dir: Path) -> dict[str, Any]:
    """Scores and grounding of the test split's captions with the connector merging down to ``tokens``."""
    model.tomeformer.set_merge_schedule(tokens=tokens)
    settings = EvlgenCaptionTask.caption_settings(run_cfg)
    captions = caption_all(model, test, batch_size=batch_size, num_beams=settings["num_beams"],
                           max_len=settings["max_len"], min_len=settings["min_len"],
                           repetition_penalty=settings["repetition_penalty"] or 1.0)
    gt = Path(test.gt_file)
    scenes = json.loads((Path(test.vis_root) / "scenes.json").read_text())["test"]
    test_scores = subset_scores(str(gt), captions, out_dir / f"test_{tokens}.json")
    held_out = subset_scores(str(gt.with_name("test_held_out_gt.json")), captions, out_dir / f"held_out_{tokens}.json")
    return {"tokens": tokens, "schedule": model.tomeformer.describe_schedule(),
            "test_cider": test_scores["CIDEr"], "held_out_cider": held_out["CIDEr"],
            "grounding": grounding(scenes, captions), "captions": captions}


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_config_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--checkpoint", required=True, help="a trained checkpoint (checkpoint_best.pth)")
    parser.add_argument("--tokens", type=budgets, default=[9, 17, 29, 45], help="final token counts, e.g. 9,17,29,45")
    parser.add_argument("--batch-size", type=int, default=None, help="captioning batch (default: run.batch_size_eval, "
                        "else 8; results do not depend on it)")
    parser.add_argument("--out", default=None, help="folder for captions and scores (default: a temporary one)")
    args = parser.parse_args(argv)
    load_config(args.cfg_path, args.options)
    cfg = Config(argparse.Namespace(cfg_path=args.cfg_path, options=list(args.options)))
    if DATASET not in cfg.datasets_cfg:
        parser.error(f"--cfg-path: budget_sweep scores the generated shapes; the config has no '{DATASET}' dataset")
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: no file at {args.checkpoint}")
    model = build_model(cfg)
    load_trainable_state_dict(model, load_checkpoint(args.checkpoint)["model"], args.checkpoint)
    test = cached(model, cfg.model_cfg, registry.get_builder_class(DATASET)(cfg.datasets_cfg[DATASET])
                  .build_datasets()["test"])
    vit_tokens = test[0]["image_features"].shape[0]
    for tokens in args.tokens:  # refuse unreachable budgets before any captioning
        try:
            model.tomeformer.set_merge_schedule(tokens=tokens)
            model.tomeformer.merge_schedule(vit_tokens)
        except ValueError as error:
            parser.error(f"--tokens: {error}")
    with tempfile.TemporaryDirectory(prefix="budget_sweep_") as temporary:
        out_dir = Path(args.out or temporary)
        out_dir.mkdir(parents=True, exist_ok=True)
        batch_size = args.batch_size or int(cfg.run_cfg.get("batch_size_eval", 8))
        rows = [evaluate_budget(model, test, cfg.run_cfg, k, batch_size, out_dir) for k in args.tokens]
        summary = [{k: v for k, v in row.items() if k != "captions"} for row in rows]
        if args.out:
            (out_dir / "budget_sweep.json").write_text(json.dumps({"checkpoint": args.checkpoint, "budgets": rows},
                                                                  indent=2))
    print(f"checkpoint {args.checkpoint}")
    print("tokens  test CIDEr  held-out CIDEr  distinct captions  shapes named exactly")
    for row in summary:
        g = row["grounding"]
        print(f"{row['tokens']:>6}  {row['test_cider']:>10.3f}  {row['held_out_cider']:>14.3f}  "
              f"{g['distinct_captions']:>11} / {g['images']:<3}  {g['shapes_named_exactly']:>14} / {g['shapes']}")
    print(json.dumps({"checkpoint": args.checkpoint, "budgets": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
