"""Helpers for runner tests: tiny caption data on disk, experiment YAMLs, and train.py subprocesses.

The data are a few random 32x32 PNGs with LAVIS annotation JSONs and COCO-format ground truth, read
through the ``caption_folder`` builder; the model is ``evlgen_opt``/``tiny`` (random, offline).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
WORDS = ["a", "red", "blue", "cat", "dog", "sits", "runs", "on", "the", "grass", "mat", "small", "big"]


def _caption(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))


def write_caption_data(root: Path, n_train: int = 8, n_val: int = 3, n_test: int = 3, corrupt_train: int = 0,
                       corrupt_test: int = 0, seed: int = 0) -> Path:
    """Random images + annotations under ``root``; returns ``root``.

    Training images have two captions each; ``corrupt_*`` extra images (one caption each in training)
    are files that are not images, so the datasets skip them.
    """
    rng = random.Random(seed)
    pixels = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    image_id = 0
    for split, count, corrupt in (("train", n_train, corrupt_train), ("val", n_val, 0), ("test", n_test, corrupt_test)):
        anns, gt_images, gt_anns = [], [], []
        for k in range(count + corrupt):
            name = f"{split}_{image_id}.png"
            if k < count:
                Image.fromarray(pixels.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "images" / name)
            else:
                (root / "images" / name).write_bytes(b"not an image")
            captions = [_caption(rng) for _ in range(2 if k < count else 1)]
            if split == "train":
                anns += [{"image": name, "caption": c, "image_id": image_id} for c in captions]
            else:
                anns.append({"image": name, "image_id": image_id})
                gt_images.append({"id": image_id})
                gt_anns += [{"image_id": image_id, "caption": c, "id": len(gt_anns) + 1} for c in captions]
            image_id += 1
        (root / f"{split}.json").write_text(json.dumps(anns))
        if split != "train":
            (root / f"{split}_gt.json").write_text(json.dumps({"images": gt_images, "annotations": gt_anns}))
    return root


def experiment(data_root: Path, output_dir: Path, train_processor: str = "blip_image_eval", **run: Any) -> dict:
    """An experiment config dict (model tiny, caption_folder data) with ``run`` overrides.

    ``train_processor: blip_image_train`` gives random training augmentations.
    """
    run_cfg = {
        "task": "evlgen_captioning", "runner": "runner_evlgen",
        "lr_sched": "linear_warmup_cosine_iter_lr", "init_lr": 1e-3, "min_lr": 1e-4, "warmup_lr": 1e-5,
        "warmup_steps": 2, "weight_decay": 0.05,
        "max_iters": 6, "iters_per_inner_epoch": 3, "save_every_iters": 3, "keep_last_k": 4,
        "batch_size_train": 2, "batch_size_eval": 2, "num_workers": 0, "seed": 42,
        "num_beams": 1, "max_len": 4, "min_len": 1,
        "train_splits": ["train"], "valid_splits": ["val"], "test_splits": ["test"],
        "output_dir": str(output_dir), "job_id": "run", "device": "cpu", "log_freq": 1,
    }
    run_cfg.update(run)
    eval_proc = {"name": "blip_image_eval", "image_size": 32}
    return {
        "model": {"arch": "evlgen_opt", "model_type": "tiny"},
        "datasets": {"caption_folder": {
            "build_info": {
                "root": str(data_root),
                "annotations": {"train": {"storage": "train.json"},
                                "val": {"storage": "val.json", "gt": "val_gt.json"},
                                "test": {"storage": "test.json", "gt": "test_gt.json"}},
                "images": {"storage": "images/"},
            },
            "vis_processor": {"train": {"name": train_processor, "image_size": 32}, "eval": eval_proc},
            "text_processor": {"train": {"name": "blip_caption"}, "eval": {"name": "blip_caption"}},
        }},
        "run": run_cfg,
    }


def write_experiment(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def launch(cfg_path: Path, *options: str, nproc: int = 1, script: str = "train.py",
           timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``script`` on ``cfg_path`` (through torch.distributed.run when ``nproc`` > 1)."""
    cmd = [PYTHON]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(_free_port())]
    cmd += [str(REPO / script), "--cfg-path", str(cfg_path)]
    if options:
        cmd += ["--options", *options]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, cwd=cfg_path.parent, env=env, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint_params(path: Path) -> dict[str, torch.Tensor]:
    """Trainable tensors stored in a runner_evlgen checkpoint."""
    return torch.load(path, map_location="cpu", weights_only=False)["model"]
