"""Every paper configuration (BLIP-2 reproduction, EVLGen pre-training and ablations) against the paper's numbers
and the authors' released configs (lavis/projects/EVLGen/train/pretrain_{opt2.7b,vicuna7b}.yaml)."""
from pathlib import Path

import pytest
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.cli_config import model_section
from lavis_evlgen.common.config_check import check_model, check_run
from lavis_evlgen.models.tome import parse_r, token_counts
from lavis_evlgen.runners.global_batch import accumulation_steps

PROJECTS = Path(__file__).resolve().parents[1] / "projects"
PAPER_DATA = ["laion115M", "ccs14M", "evlgen_coco_caption"]
BLIP2_DATA = ["evlgen_coco_caption", "ccs14M", "laion115M"]
# The authors' train_dataset_ratios, keyed by our builder names (their coco_caption is our evlgen_coco_caption).
OPT_RATIOS = {"laion115M": 15, "ccs14M": 4, "evlgen_coco_caption": 1}
VICUNA_RATIOS = {"ccs14M": 45, "evlgen_coco_caption": 5}

# file -> (arch, model_type, steps, global batch, warm-up steps, data, vision, TomeFormer layers, r)
EVLGEN = {
    "pretrain_opt2.7b_90k": ("evlgen_opt", "pretrain_opt2.7b", 90_000, 1600, 5000, PAPER_DATA, "eva_clip_g", 12, 19),
    "pretrain_opt2.7b_150k": ("evlgen_opt", "pretrain_opt2.7b", 150_000, 1600, 5000, PAPER_DATA, "eva_clip_g", 12, 19),
    "pretrain_opt2.7b_250k": ("evlgen_opt", "pretrain_opt2.7b", 250_000, 1600, 5000, PAPER_DATA, "eva_clip_g", 12, 19),
    "pretrain_55m_opt2.7b_90k": ("evlgen_opt", "pretrain_opt2.7b", 90_000, 1600, 5000, PAPER_DATA, "eva_clip_g", 6,
                                 [48, 44, 40, 36, 32, 28]),
    **{f"ablation_r{r}_opt2.7b_60k": ("evlgen_opt", "pretrain_opt2.7b", 60_000, 1600, 5000, PAPER_DATA, "eva_clip_g",
                                      12, r) for r in (10, 13, 16, 19, 22, 25)},
    "ablation_vit_eva_g_opt2.7b_60k": ("evlgen_opt", "pretrain_opt2.7b", 60_000, 1600, 5000, PAPER_DATA,
                                       "eva_clip_g", 12, 19),
    "ablation_vit_clip_L_opt2.7b_60k": ("evlgen_opt", "pretrain_opt2.7b", 60_000, 1600, 5000, PAPER_DATA, "clip_L",
                                        12, 19),
    # Table 5, as the authors' released pretrain_vicuna7b.yaml (20 per GPU x 8 GPUs, 2k warm-up, no LAION).
    "pretrain_vicuna7b_60k": ("evlgen_vicuna", "pretrain_vicuna7b", 60_000, 160, 2000,
                              ["ccs14M", "evlgen_coco_caption"], "eva_clip_g", 12, 19),
}
BLIP2 = {
    "stage1": ("blip2_stage1", "pretrain", 250_000),
    "stage2_opt2.7b": ("blip2_stage2_opt", "pretrain_opt2.7b", 80_000),
    "stage2_without_stage1_opt2.7b": ("blip2_stage2_opt", "pretrain_opt2.7b", 80_000),
}


def load(path):
    cfg = OmegaConf.load(path)
    return cfg, model_section(cfg.model)


def check_table7_run(cfg, steps, global_batch, warmup, lr_sched="linear_warmup_cosine_iter_lr"):
    """Table 7: lr 1e-4 -> 1e-5 cosine, warm-up from 1e-6, weight decay 0.05; iteration-based runner."""
    run = cfg.run
    check_run(cfg, evaluate_only=False)
    assert run.runner == "runner_evlgen" and run.lr_sched == lr_sched
    assert (run.init_lr, run.min_lr, run.warmup_lr, run.weight_decay) == (1e-4, 1e-5, 1e-6, 0.05)
    assert run.warmup_steps == warmup and run.max_iters == steps
    assert run.global_batch_size == global_batch and "accum_grad_iters" not in run and "world_size" not in run
    per_gpu = global_batch // 8
    assert run.batch_size_train == per_gpu  # the authors' 8 GPUs
    for gpus in (8, 4, 2, 1):  # the same schedule on any GPU count that divides it
        assert run.batch_size_train * gpus * accumulation_steps(run, gpus) == global_batch
    assert steps % run.iters_per_inner_epoch == 0


def check_datasets(cfg, expected):
    assert list(cfg.datasets) == expected
    for name in cfg.datasets:
        assert registry.get_builder_class(name) is not None, name
        assert cfg.datasets[name].vis_processor.train.image_size == 224


def test_every_paper_config_is_listed():
    found = {p.stem for p in (PROJECTS / "evlgen" / "train").glob("*.yaml")} - {"quickstart"}
    assert found == set(EVLGEN)
    assert {p.stem for p in (PROJECTS / "blip2_repro").glob("*.yaml")} == set(BLIP2)


@pytest.mark.parametrize("name", sorted(EVLGEN))
def test_evlgen_configs(name):
    arch, model_type, steps, batch, warmup, data, vision, layers, r = EVLGEN[name]
    cfg, model = load(PROJECTS / "evlgen" / "train" / f"{name}.yaml")
    check_model(cfg)
    assert (model.arch, model.model_type) == (arch, model_type)
    check_table7_run(cfg, steps, batch, warmup, lr_sched="linear_warmup_cosine_lr")  # the authors' scheduler
    check_datasets(cfg, data)
    run = cfg.run
    ratios = VICUNA_RATIOS if arch == "evlgen_vicuna" else OPT_RATIOS
    assert OmegaConf.to_container(run.train_dataset_ratios) == ratios and set(ratios) == set(data)
    # The authors' task `captioning`, validated on COCO Karpathy val with their beam settings.
    assert run.task == "evlgen_captioning" and list(run.valid_splits) == ["val"]
    assert (run.num_beams, run.max_len, run.min_len) == (5, 30, 8)
    assert run.batch_size_eval == (20 if arch == "evlgen_vicuna" else 100)
    assert cfg.datasets.evlgen_coco_caption.get("type", "default") == "default"  # train + val
    assert model.vision.name == vision and model.vision.image_size == 224
    assert model.tomeformer.get("num_layers", 12) == layers
    configured_r = model.tomeformer.r
    assert (OmegaConf.to_container(configured_r) if OmegaConf.is_config(configured_r) else configured_r) == r
    counts = token_counts(257, parse_r(r if isinstance(r, int) else list(r), layers))
    if name.startswith("ablation_r"):
        assert counts[0] == 257 - r
    else:
        assert counts[-1] == 29  # 28 merged tokens + CLS, as in the paper


@pytest.mark.parametrize("name", sorted(BLIP2))
def test_blip2_reproduction_configs(name):
    arch, model_type, steps = BLIP2[name]
    cfg, model = load(PROJECTS / "blip2_repro" / f"{name}.yaml")
    check_model(cfg)
    assert (model.arch, model.model_type) == (arch, model_type)
    check_table7_run(cfg, steps, 1600, 5000)
    check_datasets(cfg, BLIP2_DATA)
    assert model.qformer.num_query_token == 32 and model.qformer.cross_attention_freq == 2
    assert model.qformer.config.hidden_size == 768 and model.qformer.config.num_hidden_layers == 12
    assert model.vision.name == "eva_clip_g"


def test_stage2_starts_from_stage1s_last_checkpoint():
    stage1 = OmegaConf.load(PROJECTS / "blip2_repro" / "stage1.yaml").run
    stage2 = OmegaConf.load(PROJECTS / "blip2_repro" / "stage2_opt2.7b.yaml").model
    assert stage2.stage1_checkpoint == f"{stage1.output_dir}/{stage1.job_id}/checkpoint_latest.pth"
    alone = OmegaConf.load(PROJECTS / "blip2_repro" / "stage2_without_stage1_opt2.7b.yaml").model
    assert alone.stage1_checkpoint is None


def test_job_ids_are_unique_per_output_folder():
    seen = set()
    for path in [*(PROJECTS / "evlgen" / "train").glob("*.yaml"), *(PROJECTS / "blip2_repro").glob("*.yaml")]:
        run = OmegaConf.load(path).run
        key = (run.output_dir, run.job_id)
        assert key not in seen, path
        seen.add(key)


def test_learning_rate_follows_the_authors_staircase_cosine():
    """pretrain_opt2.7b_250k as runner_evlgen steps it: warm-up 1e-6 -> 1e-4 over the first 5000 steps, then
    LAVIS's cosine over 50 inner epochs, constant inside each (the authors' linear_warmup_cosine_lr)."""
    import math

    import torch

    run = OmegaConf.load(PROJECTS / "evlgen" / "train" / "pretrain_opt2.7b_250k.yaml").run
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=run.init_lr)
    per_epoch = run.iters_per_inner_epoch
    sched = registry.get_lr_scheduler_class(run.lr_sched)(
        optimizer=optimizer, max_epoch=math.ceil(run.max_iters / per_epoch), min_lr=run.min_lr, init_lr=run.init_lr,
        decay_rate=None, warmup_start_lr=run.warmup_lr, warmup_steps=run.warmup_steps, max_iters=run.max_iters,
        iters_per_epoch=per_epoch)

    def lr(step):
        sched.step(cur_epoch=step // per_epoch, cur_step=step % per_epoch)
        return optimizer.param_groups[0]["lr"]

    assert lr(0) == pytest.approx(1e-6) and lr(2500) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5)
    cosine = [1e-5 + 9e-5 * 0.5 * (1 + math.cos(math.pi * e / 50)) for e in (1, 49)]
    assert lr(5000) == lr(9999) == pytest.approx(cosine[0])
    assert lr(249_999) == pytest.approx(cosine[1]) and 1e-5 < cosine[1] < 1.01e-5


def test_video_fine_tuning_configs_follow_the_authors_release():
    """lavis/projects/EVLGen_video/train/caption_msrvtt_opt2.7b_ft.yaml, launched on 8 GPUs by their README."""
    names = [f"caption_{data}_opt2.7b{variant}" for data in ("msrvtt", "msvd")
             for variant in ("", "_mean", "_concat", "_from_webvid")]
    for name in names:
        run = OmegaConf.load(PROJECTS / "evlgen_video" / "train" / f"{name}.yaml").run
        assert (run.lr_sched, run.init_lr, run.min_lr, run.warmup_lr, run.warmup_steps) == \
            ("linear_warmup_cosine_lr", 1e-5, 1e-6, 1e-8, 1000), name
        assert (run.max_iters, run.iters_per_inner_epoch, run.weight_decay) == (50_000, 1000, 0.05), name
        assert (run.global_batch_size, run.batch_size_train, run.num_beams, run.max_len, run.min_len) == \
            (32, 4, 5, 20, 5), name
        assert accumulation_steps(run, 8) == 1 and accumulation_steps(run, 2) == 4
