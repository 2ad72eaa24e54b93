"""The quickstart: from a fresh environment to a trained EVLGen, its scores, captions and pictures.

    python -m lavis_evlgen.tools.quickstart [--cfg-path projects/evlgen/train/quickstart.yaml]
                                            [--options run.max_iters=20 ...]

Steps: prepare the embedded weights (cached), generate the data (cached), draw the token-merge map
of a real photo with the untrained connector, train and evaluate through ``train.py`` (LAVIS
runner), caption held-out shapes and the real photos with the trained model, draw the loss curve
and the merge map after training, and print the scores beside the most-frequent-caption baseline.
Everything lands in ``<run.output_dir>/<run.job_id>/`` (``metrics.json``, ``captions.json``,
``loss_curve.png``, ``merge_map.png``).

Every phase is timed and the times are printed at the end and kept in ``metrics.json``
(``phase_seconds``): the install (measured by ``run_scripts/quickstart.sh``, passed in
``EVLGEN_INSTALL_SECONDS``), weights, data, model build and feature cache, training (the runner's
own per-iteration times from ``log.txt``), validation and test, captions and scores, pictures.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lavis.common.config import Config
from lavis.common.registry import registry
from omegaconf import OmegaConf
from PIL import Image

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.checkpoint import load_checkpoint, load_trainable_state_dict
from lavis_evlgen.common.cli_config import add_config_arguments, lavis_config, model_type_config
from lavis_evlgen.common.paths import REPO_ROOT, config_path
from lavis_evlgen.datasets.generate.shapes_caption import most_frequent_caption
from lavis_evlgen.embedded import prepare_embedded
from lavis_evlgen.tasks.caption_metrics import coco_caption_scores
from lavis_evlgen.tools.loss_curve import plot_loss_curve, read_losses
from lavis_evlgen.tools.merge_map import merge_map, plot_merge_maps

logger = logging.getLogger("quickstart")

DEFAULT_CFG = "projects/evlgen/train/quickstart.yaml"
PHOTO_BUILDER = "skimage_photos"
MERGE_PHOTO = "astronaut"
TARGET_MINUTES = 10
INSTALL_SECONDS = "EVLGEN_INSTALL_SECONDS"
CACHE_MARKER = "feature cache "  # the runner's "feature cache hit: ..." / "feature cache written: ..." log line


class Steps:
    """Numbered progress lines with elapsed time, so a newcomer sees where the run is."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.time()

    def __call__(self, what: str) -> None:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {what}  (elapsed {self.elapsed():.0f} s)", flush=True)

    def elapsed(self) -> float:
        return time.time() - self.start


class Phases:
    """Wall-clock seconds per phase, in the order they ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._since = time.time()

    def end(self, name: str) -> float:
        """Close the phase ``name`` (adding to it if it ran before) at the current time; return its length."""
        now = time.time()
        took = now - self._since
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        self._since = now
        return took

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def build_split(name: str, cfg: Any, split: str):
    return registry.get_builder_class(name)(cfg).build_datasets()[split]


def photo_set(model_cfg: Any):
    """The scikit-image photos, processed as the model expects."""
    cfg = OmegaConf.load(config_path(f"datasets/{PHOTO_BUILDER}/defaults.yaml"))
    cfg = cfg.datasets[PHOTO_BUILDER]
    cfg.vis_processor = model_cfg.preprocess.vis_processor
    return build_split(PHOTO_BUILDER, cfg, "test")


def photo_array(dataset, stem: str) -> tuple[np.ndarray, torch.Tensor]:
    """The named photo resized to the model's input, and its processed tensor."""
    for ann in dataset.annotation:
        if Path(ann["image"]).stem == stem:
            image = Image.open(Path(dataset.vis_root) / ann["image"]).convert("RGB")
            tensor = dataset.vis_processor(image)
            return np.asarray(image.resize(tensor.shape[-2:][::-1])), tensor
    raise FileNotFoundError(f"photo '{stem}' not in {dataset.vis_root}")


def build_model(cfg: Config) -> torch.nn.Module:
    model_cls = registry.get_model_class(cfg.model_cfg.arch)
    return model_cls.from_config(cfg.model_cfg).eval()


@torch.no_grad()
def caption_all(model, dataset, batch_size: int, num_beams: int, max_len: int, min_len: int,
                repetition_penalty: float = 1.0) -> dict[int, str]:
    """Generated caption per image_id for every image of an evaluation dataset."""
    captions = {}
    for start in range(0, len(dataset), batch_size):
        batch = dataset.collater([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        out = model.generate(batch, num_beams=num_beams, max_length=max_len, min_length=min_len,
                             repetition_penalty=repetition_penalty)
        captions.update({int(i): c for i, c in zip(batch["image_id"], out)})
    return captions


def references(gt_file: str) -> dict[int, list[str]]:
    refs: dict[int, list[str]] = {}
    for ann in json.loads(Path(gt_file).read_text())["annotations"]:
        refs.setdefault(int(ann["image_id"]), []).append(ann["caption"])
    return refs


def subset_scores(gt_file: str, captions: dict[int, str], out_path: Path) -> dict[str, float]:
    """pycocoevalcap scores of the ``captions`` of the images in ``gt_file`` (results kept in ``out_path``)."""
    ids = references(gt_file)
    out_path.write_text(json.dumps([{"image_id": i, "caption": captions[i]} for i in sorted(ids)]))
    return coco_caption_scores(gt_file, str(out_path))


def train(cfg_path: str, options: list[str]) -> dict[str, float]:
    """Train and evaluate through train.py, the way users run it; its output streams to the console.

    Returns when the process printed what: ``{"feature_cache": s, "end": s}`` in seconds from the start,
    the first key only if the runner logged its feature-cache line.
    """
    cmd = [sys.executable, str(REPO_ROOT / "train.py"), "--cfg-path", cfg_path]
    if options:
        cmd += ["--options", *options]
    start = time.time()
    marks: dict[str, float] = {}
    with subprocess.Popen(cmd, cwd=Path.cwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            if CACHE_MARKER in line and "feature_cache" not in marks:
                marks["feature_cache"] = time.time() - start
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    marks["end"] = time.time() - start
    return marks


def training_seconds(log_txt: Path) -> tuple[float, int]:
    """Seconds spent in training iterations and their count, from the runner's per-inner-epoch stats in log.txt
    (``train_seconds_per_iter`` for the iterations up to ``train_iteration``; validation is not included)."""
    seconds, done = 0.0, 0
    for line in log_txt.read_text().splitlines():
        if line.startswith('{"train_'):
            stats = json.loads(line)
            iteration = int(stats["train_iteration"])
            if iteration <= done:  # an earlier run of the same job: keep the last run only
                seconds, done = 0.0, 0
            seconds += float(stats["train_seconds_per_iter"]) * (iteration - done)
            done = iteration
    return seconds, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="EVLGen quickstart on the embedded default (CPU).")
    add_config_arguments(parser, default=str(REPO_ROOT / DEFAULT_CFG))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    steps = Steps(total=7)
    phases = Phases()
    if os.environ.get(INSTALL_SECONDS):
        phases.add("install", float(os.environ[INSTALL_SECONDS]))

    steps("Preparing the embedded weights (converted once, then cached)")
    paths = prepare_embedded()
    print(f"  LLM {paths.llm_dir.name}, ViT {paths.vision_dir.name}, BERT {paths.bert_dir.name}")
    phases.end("weights")

    steps("Generating the data (shapes captions, scikit-image photos; cached)")
    cfg = lavis_config(args.cfg_path, args.options)
    run = cfg.run_cfg
    (name, data_cfg), = cfg.datasets_cfg.items()
    shapes = registry.get_builder_class(name)(data_cfg).build_datasets()
    test = shapes["test"]
    photos = photo_set(model_type_config(cfg.model_cfg.arch, cfg.model_cfg.model_type))
    print(f"  {len(shapes['train'])} training captions, {len(test)} test images, {len(photos)} photos")
    phases.end("data")

    steps("Token-merge map of a real photo with the untrained connector")
    torch.manual_seed(int(run.get("seed", 42)))
    model = build_model(cfg)
    phases.end("model build")
    photo, photo_tensor = photo_array(photos, MERGE_PHOTO)
    before = merge_map(model, photo_tensor)
    phases.end("pictures")

    steps("Training and evaluating with train.py (LAVIS runner, CPU)")
    marks = train(args.cfg_path, args.options)
    phases.end("train.py")
    out_dir = Path(run.output_dir).expanduser().resolve() / str(run.job_id)
    split_train_py(phases, marks, out_dir / "log.txt")
    best = out_dir / "checkpoint_best.pth"
    load_trainable_state_dict(model, load_checkpoint(best)["model"], str(best))
    model.eval()

    steps("Captions of held-out shapes (from the test run) and of real photos, by the trained model")
    generate = dict(batch_size=int(run.batch_size_eval), num_beams=int(run.num_beams),
                    max_len=int(run.max_len), min_len=int(run.min_len),
                    repetition_penalty=float(run.get("repetition_penalty", 1.0)))
    test_caps = {int(r["image_id"]): r["caption"]
                 for r in json.loads((out_dir / "result" / "test_best.json").read_text())}
    photo_caps = caption_all(model, photos, **generate)
    report_captions(test, test_caps, photos, photo_caps)
    phases.end("captions and scores")

    steps("Drawing the loss curve and the merge map after training")
    after = merge_map(model, photo_tensor)
    plot_merge_maps(photo, {"before training": before, "after training": after}, out_dir / "merge_map.png",
                    title="Token merging (patches coloured by the final token they merged into)")
    plot_loss_curve(read_losses(out_dir), out_dir / "loss_curve.png")
    phases.end("pictures")

    steps("Scores")
    metrics = score(test, test_caps, shapes, photos, photo_caps, out_dir)
    phases.end("captions and scores")
    metrics["phase_seconds"] = {name: round(sec, 1) for name, sec in phases.seconds.items()}
    metrics["elapsed_seconds"] = round(sum(phases.seconds.values()), 1)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "captions.json").write_text(json.dumps({"test": test_caps, "photos": photo_caps}, indent=2))
    print_summary(metrics, out_dir)
    return 0


def split_train_py(phases: Phases, marks: dict[str, float], log_txt: Path) -> None:
    """Replace the "train.py" phase by model build and feature cache, training, validation and test."""
    total = phases.seconds.pop("train.py")
    train_s, iterations = training_seconds(log_txt)
    setup = marks.get("feature_cache", 0.0)
    if setup:
        phases.add("model build and feature cache", setup)
    phases.add(f"training ({iterations} steps)", train_s)
    phases.add("validation and test", max(total - setup - train_s, 0.0))


def report_captions(test, test_caps: dict[int, str], photos, photo_caps: dict[int, str], shown: int = 6) -> None:
    held_out = set(references(str(Path(test.gt_file).with_name("test_held_out_gt.json"))))
    refs = references(test.gt_file)
    print("  held-out shapes (colour-shape pairs never seen in training):")
    for image_id in sorted(held_out)[:shown]:
        print(f"    {test_caps[image_id]!r:55}  reference: {refs[image_id][0]!r}")
    photo_refs = references(photos.gt_file)
    names = {int(a["image_id"]): Path(a["image"]).stem for a in photos.annotation}
    print("  real photos (the model only ever saw shapes):")
    for image_id, caption in sorted(photo_caps.items()):
        print(f"    {names[image_id]:24} {caption!r:50}  reference: {photo_refs[image_id][0]!r}")


def grounding(scenes: list[dict[str, Any]], captions: dict[int, str]) -> dict[str, int]:
    """How much the captions depend on the image, which CIDEr alone hides.

    A few template sentences repeated for every image can score well above a constant caption, so
    this counts the distinct captions and the drawn shapes whose exact phrase ("small red circle")
    appears in their image's caption. ``scenes``: the split's entries of the generator's scenes.json.
    """
    named = sum(f"{s['size']} {s['color']} {s['kind']}" in captions[sc["image_id"]]
                for sc in scenes for s in sc["shapes"])
    return {"images": len(scenes), "distinct_captions": len({captions[sc["image_id"]] for sc in scenes}),
            "shapes": sum(len(sc["shapes"]) for sc in scenes), "shapes_named_exactly": named}


def score(test, test_caps, shapes, photos, photo_caps, out_dir: Path) -> dict[str, Any]:
    """Scores of the trained model's captions on test (all, held-out, seen), the baseline and the photos."""
    gt = Path(test.gt_file)
    scored = out_dir / "result"
    baseline = most_frequent_caption(str(Path(shapes["train"].vis_root) / "train.json"))
    return {
        "test": subset_scores(str(gt), test_caps, scored / "quickstart_test.json"),
        "test_held_out": subset_scores(str(gt.with_name("test_held_out_gt.json")), test_caps,
                                       scored / "quickstart_test_held_out.json"),
        "test_seen": subset_scores(str(gt.with_name("test_seen_gt.json")), test_caps,
                                   scored / "quickstart_test_seen.json"),
        "baseline_most_frequent_caption": {
            "caption": baseline,
            **subset_scores(str(gt), {i: baseline for i in test_caps}, scored / "quickstart_baseline.json")},
        "photos": subset_scores(photos.gt_file, photo_caps, scored / "quickstart_photos.json"),
        "test_grounding": grounding(
            json.loads((Path(shapes["train"].vis_root) / "scenes.json").read_text())["test"], test_caps),
        "run_log": str(out_dir / "run.log"),
    }


def print_summary(metrics: dict[str, Any], out_dir: Path) -> None:
    base = metrics["baseline_most_frequent_caption"]
    print(f"\n  {'split':28} {'CIDEr':>7} {'BLEU-4':>7} {'METEOR':>7} {'ROUGE-L':>7}")
    rows = [("test (all)", metrics["test"]), ("test, held-out pairs", metrics["test_held_out"]),
            ("test, seen pairs", metrics["test_seen"]),
            ("baseline: most frequent caption", base), ("real photos", metrics["photos"])]
    for name, m in rows:
        print(f"  {name:28} {m['CIDEr']:7.3f} {m['Bleu_4']:7.3f} {m['METEOR']:7.3f} {m['ROUGE_L']:7.3f}")
    ratio = metrics["test_held_out"]["CIDEr"] / max(base["CIDEr"], 1e-9)
    print(f"\n  held-out CIDEr {metrics['test_held_out']['CIDEr']:.3f} vs most-frequent-caption baseline "
          f"{base['CIDEr']:.3f} ({ratio:.1f}x)")
    g = metrics["test_grounding"]
    print(f"  image dependence: {g['distinct_captions']} distinct captions for {g['images']} test images; "
          f"{g['shapes_named_exactly']} of {g['shapes']} shapes named exactly (size, colour, kind)")
    print_phases(metrics["phase_seconds"])
    minutes = metrics["elapsed_seconds"] / 60
    what = "with" if "install" in metrics["phase_seconds"] else "without"
    print(f"  quickstart time {minutes:.1f} min {what} the install (target: at most {TARGET_MINUTES} min with it)")
    print(f"  pictures: {out_dir / 'loss_curve.png'}, {out_dir / 'merge_map.png'}")
    print(f"  metrics: {out_dir / 'metrics.json'}; captions: {out_dir / 'captions.json'}")
    print("  next: .venv/bin/python -m lavis_evlgen.tools.demo   (this model in the browser, http://127.0.0.1:7860)")
    print(f"        .venv/bin/tensorboard --logdir {out_dir.parent}   (training curves)")


def print_phases(seconds: dict[str, float]) -> None:
    print("\n  time per phase:")
    for name, sec in seconds.items():
        extra = ""
        if name.startswith("training (") and sec > 0:
            steps = int(name.split("(")[1].split()[0])
            extra = f"  ({sec / max(steps, 1):.2f} s/step)"
        print(f"    {name:32} {sec:7.1f} s{extra}")
    print(f"    {'total':32} {sum(seconds.values()):7.1f} s")


if __name__ == "__main__":
    sys.exit(main())
