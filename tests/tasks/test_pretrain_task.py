"""evlgen_pretrain: training datasets weighted by size (kept apart) or by run.train_dataset_ratios."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.datasets.mixture import RatioMixture
from lavis_evlgen.tasks.pretrain import MIXTURE_NAME
from tests.datasets.benchmark_fixtures import write_capfilt, write_coco, write_shards
from tests.runners.tiny_run import launch

PROCESSORS = {"vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32},
                                "eval": {"name": "blip_image_eval", "image_size": 32}}}


def builder_config(name: str, root, **build_info):
    cfg = OmegaConf.load(config_path(f"datasets/{name}/defaults.yaml")).datasets[name]
    return OmegaConf.merge(cfg, PROCESSORS, {"build_info": {"root": str(root), **build_info}})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    write_capfilt(root)
    write_coco(root)
    return root


def pretrain_cfg(root, tmp_path, **run):
    datasets = {"evlgen_coco_caption": builder_config("evlgen_coco_caption", root),
                "evlgen_capfilt_ccs": builder_config("evlgen_capfilt_ccs", root,
                                                     annotations={"train": {"storage": "capfilt/ccs.json"}},
                                                     images={"storage": "capfilt/images"},
                                                     records_dir=str(tmp_path / "records"))}
    datasets["evlgen_coco_caption"].build_info.derived_dir = str(tmp_path / "derived")
    run_cfg = OmegaConf.create({"task": "evlgen_pretrain", **run})
    return SimpleNamespace(run_cfg=run_cfg, datasets_cfg=OmegaConf.create(datasets))


def test_pretrain_task_by_size_keeps_datasets_apart(root, tmp_path):
    cfg = pretrain_cfg(root, tmp_path)
    task = registry.get_task_class("evlgen_pretrain").setup_task(cfg)
    datasets = task.build_datasets(cfg)
    assert len(datasets["evlgen_coco_caption"]["train"]) == 3 and len(datasets["evlgen_capfilt_ccs"]["train"]) == 5
    assert MIXTURE_NAME not in datasets


def test_pretrain_task_with_ratios_builds_one_mixture(root, tmp_path):
    cfg = pretrain_cfg(root, tmp_path, train_dataset_ratios={"evlgen_coco_caption": 1, "evlgen_capfilt_ccs": 3},
                       train_dataset_length=40)
    task = registry.get_task_class("evlgen_pretrain").setup_task(cfg)
    datasets = task.build_datasets(cfg)
    mixture = datasets[MIXTURE_NAME]["train"]
    assert isinstance(mixture, RatioMixture) and mixture.sizes == [10, 30]
    assert "train" not in datasets["evlgen_coco_caption"] and "test" in datasets["evlgen_coco_caption"]
    assert "evlgen_capfilt_ccs" not in datasets
    batch = mixture.collater([mixture[i] for i in range(0, 40, 4)])
    assert batch["n_skipped"] + len(batch["text_input"]) == 10
    assert set(batch) == {"image", "text_input", "n_skipped"}

    bad = pretrain_cfg(root, tmp_path, train_dataset_ratios={"evlgen_coco_caption": 1})
    with pytest.raises(ConfigError, match="run.train_dataset_ratios"):
        registry.get_task_class("evlgen_pretrain").setup_task(bad).build_datasets(bad)


def test_training_on_shards_and_capfilt_by_ratio_finishes_and_reports_skips(root, tmp_path):
    write_shards(root)
    processor = {"train": {"name": "blip_image_eval", "image_size": 32}}
    capfilt = {"root": str(root), "annotations": {"train": {"storage": "capfilt/ccs.json"}},
               "images": {"storage": "capfilt/images"}, "records_dir": str(tmp_path / "records")}
    config = {
        "model": {"arch": "evlgen_opt", "model_type": "tiny"},
        "datasets": {
            "evlgen_capfilt_ccs": {"build_info": capfilt, "vis_processor": processor},
            "laion115M": {"build_info": {"root": str(root), "shards": "laion/{00000..00001}.tar", "num_samples": 20},
                          "vis_processor": processor},
        },
        "run": {"task": "evlgen_pretrain", "runner": "runner_evlgen",
                "train_dataset_ratios": {"evlgen_capfilt_ccs": 1, "laion115M": 1},
                "lr_sched": "linear_warmup_cosine_iter_lr", "init_lr": 1e-3, "min_lr": 1e-4, "warmup_lr": 1e-5,
                "warmup_steps": 1, "weight_decay": 0.05, "max_iters": 4, "iters_per_inner_epoch": 4,
                "batch_size_train": 4, "num_workers": 1, "seed": 0, "train_splits": ["train"],
                "output_dir": str(tmp_path / "out"), "job_id": "run", "device": "cpu", "log_freq": 1},
    }
    cfg_path = tmp_path / "pretrain.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    proc = launch(cfg_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = [json.loads(line) for line in (tmp_path / "out/run/log.txt").read_text().splitlines()
             if line.startswith('{"train_')]
    assert stats[-1]["train_iteration"] == 4 and stats[-1]["train_skipped_samples"] > 0
