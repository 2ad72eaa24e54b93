"""Side-by-side training of EVLGen and BLIP-2 on the same frozen parts, data, batch and step budget.

    python -m lavis_evlgen.tools.compare --cfg-path projects/compare/embedded.yaml [--options key=value ...]

Three methods, built in this process through LAVIS's Config, task and the ``runner_evlgen`` runner
(each from the same seed, so with the same data order) and trained together, one optimizer step of
each in turn, so that all of them meet the same machine conditions (on a shared machine the load of
other processes drifts; timed one after another, the ratios would drift with it):

1. ``evlgen``: EVLGen, single stage, ``compare.steps`` steps;
2. ``blip2_stage2_only``: BLIP-2 stage 2 from a Q-Former that skipped stage 1 ("BLIP-2 without
   stage 1", which the paper reports collapses), ``compare.steps`` steps;
3. ``blip2_two_stage``: BLIP-2 stage 1 (ITC + ITM + ITG) for ``round(steps * compare.stage1_share)``
   steps, then stage 2 from its checkpoint for the rest of the same budget.

Every run uses the ``run`` section (optimizer, schedule shape, batch) with its own step count; the
warm-up is ``compare.warmup_share`` of each run's steps. The captioning models are then scored on the
same split (``compare.eval_split``). Vision and text processors are the EVLGen model type's
(``preprocess``), for every method. With ``compare.feature_cache`` (the methods must share one frozen
ViT, which is checked) the ViT runs once per image and every method trains on the cached tokens, so
the timings compare the parts that differ: connector, LLM and losses.

Each method's model type is ``compare.model_type`` unless its ``methods.<name>.model`` says otherwise
(``embedded`` for the real small parts, ``tiny`` for the random ones used by the tests).

Outputs in ``compare.output_dir``: ``comparison.md`` and ``comparison.json`` (trainable parameters,
connector MACs per sample from ``lavis_evlgen.tools.flops``, steps per second, training and wall time,
final training loss, CIDEr, and ratios to EVLGen measured in this run, with the machine), and
``loss_curves.png``; each run's runner output is under ``runs/<run>/`` and its config under
``configs/<run>.yaml``.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from lavis.common.config import Config
from lavis.common.registry import registry
from lavis.tasks import setup_task
from omegaconf import DictConfig, OmegaConf

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.checkpoint import seed_all
from lavis_evlgen.common.config_check import ConfigError, check_config
from lavis_evlgen.common.distributed import init_distributed, shutdown_distributed
from lavis_evlgen.datasets.feature_cache import CachedFeaturesDataset, cache_features
from lavis_evlgen.models.blip2 import Blip2Stage1, Blip2Stage2OPT
from lavis_evlgen.models.evlgen_base import EVLGenBase
from lavis_evlgen.models.llm import part_dtype
from lavis_evlgen.models.vision import build_vision_encoder
from lavis_evlgen.runners.runner_evlgen import RunnerEvlgen
from lavis_evlgen.tools.flops import build_shape_model, count_stage, format_macs, model_config

logger = logging.getLogger(__name__)

METHODS = {"evlgen": EVLGenBase, "blip2_stage1": Blip2Stage1, "blip2_stage2": Blip2Stage2OPT}
CAPTION_TASK = "evlgen_captioning"
STAGE1_TASK = "image_text_pretrain"


# ---------------------------------------------------------------------------------------------- config
def load_config(path: str, options: Sequence[str] = ()) -> DictConfig:
    """The comparison config with ``--options`` applied, checked (ConfigError naming the key)."""
    if not os.path.isfile(path):
        raise ConfigError(f"--cfg-path: no such file: {path}")
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(options)))
    compare = cfg.get("compare")
    if compare is None:
        raise ConfigError("compare: missing section")
    steps = compare.get("steps")
    if not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"compare.steps: an integer >= 2 is needed (two stages share it), got {steps!r}")
    share = compare.get("stage1_share", 0.75)
    if not 0 < share < 1 or not 1 <= round(steps * share) < steps:
        raise ConfigError(f"compare.stage1_share: must leave both stages at least one of {steps} steps, got {share}")
    for key in ("output_dir", "model_type"):
        if not compare.get(key):
            raise ConfigError(f"compare.{key}: missing")
    for name, base in METHODS.items():
        section = (cfg.get("methods") or {}).get(name)
        if section is None or section.get("model") is None:
            raise ConfigError(f"methods.{name}.model: missing (the comparison needs {sorted(METHODS)})")
        model_cls = registry.get_model_class(section.model.get("arch"))
        if model_cls is None or not issubclass(model_cls, base):
            raise ConfigError(f"methods.{name}.model.arch: '{section.model.get('arch')}' is not a "
                              f"{base.__name__} model")
    for key in ("datasets", "run"):
        if not cfg.get(key):
            raise ConfigError(f"{key}: missing section")
    return cfg


def method_model(cfg: DictConfig, name: str) -> DictConfig:
    """``methods.<name>.model`` with ``compare.model_type`` where it names no type."""
    model = OmegaConf.create(OmegaConf.to_container(cfg.methods[name].model))
    if not model.get("model_type"):
        model.model_type = cfg.compare.model_type
    return model


def shared_vision(cfg: DictConfig) -> DictConfig:
    """The frozen ViT every method uses (ConfigError if they differ: the comparison needs the same one)."""
    visions = {name: model_config(method_model(cfg, name)).vision for name in METHODS}
    first = OmegaConf.to_container(visions["evlgen"], resolve=True)
    for name, vision in visions.items():
        if OmegaConf.to_container(vision, resolve=True) != first:
            raise ConfigError(f"methods.{name}.model.vision: differs from methods.evlgen's; the methods must "
                              "share one frozen ViT")
    return visions["evlgen"]


def datasets_section(cfg: DictConfig) -> DictConfig:
    """``datasets`` with the EVLGen model type's processors wherever the config gives none."""
    preprocess = model_config_file(method_model(cfg, "evlgen")).get("preprocess", {})
    datasets = OmegaConf.create(OmegaConf.to_container(cfg.datasets))
    for name, section in datasets.items():
        section = section if section is not None else OmegaConf.create()
        for key in ("vis_processor", "text_processor"):
            if key not in section and key in preprocess:
                section[key] = preprocess[key]
        datasets[name] = section
    return datasets


def model_config_file(model: DictConfig) -> DictConfig:
    """The whole default config file of a model type (with its ``preprocess`` section)."""
    return OmegaConf.load(registry.get_model_class(model.arch).default_config_path(model.model_type))


@dataclass
class RunPlan:
    """One training run: which method's model, its task, and which steps of the shared budget it takes."""

    name: str
    method: str
    start: int
    steps: int
    task: str
    evaluate: bool
    stage1_from: Optional[str] = None


def plan(cfg: DictConfig) -> list[RunPlan]:
    """The four training runs of the three methods, placed on the shared step budget."""
    steps = int(cfg.compare.steps)
    stage1 = round(steps * cfg.compare.get("stage1_share", 0.75))
    return [RunPlan("evlgen", "evlgen", 0, steps, CAPTION_TASK, True),
            RunPlan("blip2_stage2_only", "blip2_stage2", 0, steps, CAPTION_TASK, True),
            RunPlan("blip2_stage1", "blip2_stage1", 0, stage1, STAGE1_TASK, False),
            RunPlan("blip2_stage2_after_stage1", "blip2_stage2", stage1, steps - stage1, CAPTION_TASK, True,
                    stage1_from="blip2_stage1")]


def run_config(cfg: DictConfig, run: RunPlan, out: Path, vision_width: Optional[int]) -> DictConfig:
    """The LAVIS experiment config of one run."""
    model = method_model(cfg, run.method)
    if vision_width is not None:
        model.use_features = True
        model.vision = OmegaConf.merge(model.get("vision", {}), {"width": vision_width})
    if run.stage1_from:
        model.stage1_checkpoint = str(out / "runs" / run.stage1_from / "checkpoint_latest.pth")
    share = float(cfg.compare.get("warmup_share", 0.1))
    run_cfg = OmegaConf.merge(cfg.run, {
        "task": run.task, "runner": "runner_evlgen", "max_iters": run.steps, "iters_per_inner_epoch": run.steps,
        "save_every_iters": run.steps, "warmup_steps": round(run.steps * share), "keep_last_k": 1,
        "output_dir": str(out / "runs"), "job_id": run.name, "valid_splits": [],
        "test_splits": [cfg.compare.get("eval_split", "test")] if run.evaluate else [], "evaluate": False})
    return OmegaConf.create({"model": model, "datasets": datasets_section(cfg), "run": run_cfg})


# ---------------------------------------------------------------------------------------------- features
class FeatureCache:
    """Frozen ViT tokens of every image, computed once (``lavis_evlgen.datasets.feature_cache``)."""

    def __init__(self, vision: DictConfig, root: Path):
        self.vision = vision
        self.root = root
        self.encoder_id = json.dumps(OmegaConf.to_container(vision, resolve=True), sort_keys=True)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = part_dtype(vision.get("precision", "fp16"), "model.vision.precision")
        self._encoder: Optional[torch.nn.Module] = None

    @property
    def encoder(self) -> torch.nn.Module:
        if self._encoder is None:
            self._encoder = build_vision_encoder(self.vision).to(device=self.device, dtype=self.dtype).eval()
        return self._encoder

    @property
    def width(self) -> int:
        """Width of the ViT tokens (what the models read instead of images)."""
        return int(self.encoder.num_features)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images.to(device=self.device, dtype=self.dtype)).float().cpu()

    def wrap(self, datasets: dict) -> dict:
        """``{name: {split: dataset}}`` serving cached ``image_features`` instead of images."""
        return {name: {split: CachedFeaturesDataset(ds, cache_features(ds, self.encode, self.encoder_id, self.root,
                                                                       progress=False))
                       for split, ds in splits.items()}
                for name, splits in datasets.items()}

    def release(self) -> None:
        self._encoder = None


# ---------------------------------------------------------------------------------------------- training
class RecordingRunner(RunnerEvlgen):
    """runner_evlgen that also keeps each step's loss and duration and the test metrics."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_log: list[tuple[int, float, float]] = []
        self.test_metrics: dict[str, Any] = {}

    def train_step(self) -> tuple[Optional[float], int]:
        start = time.perf_counter()
        loss, skipped = super().train_step()
        if loss is not None:
            self.step_log.append((self.iteration, loss, time.perf_counter() - start))
        return loss, skipped

    def evaluate(self, cur_epoch: Any = "best", skip_reload: bool = False) -> dict[str, Any]:
        logs = super().evaluate(cur_epoch=cur_epoch, skip_reload=skip_reload)
        self.test_metrics.update({split: metrics for split, metrics in logs.items() if metrics})
        return logs


@dataclass
class RunResult:
    """What one training run measured (seconds: its own steps, build and evaluation only)."""

    name: str
    arch: str
    steps: int
    trainable_params: int
    losses: list[tuple[int, float]]
    step_seconds: list[float]
    train_seconds: float
    wall_seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


class LiveRun:
    """A run being trained: its LAVIS config, task, model and runner, built and ready to step."""

    def __init__(self, config_path: Path, run: RunPlan, cache: Optional[FeatureCache]):
        start = time.perf_counter()
        self.plan = run
        check_config(OmegaConf.load(config_path))
        cfg = Config(argparse.Namespace(cfg_path=str(config_path), options=[]))
        init_distributed(cfg.run_cfg)
        seed_all(int(cfg.run_cfg.get("seed", 42)))
        task = setup_task(cfg)
        datasets = task.build_datasets(cfg)
        if cache is not None:
            datasets = cache.wrap(datasets)
        self.arch = cfg.model_cfg.arch
        self.runner = RecordingRunner(cfg=cfg, job_id=run.name, task=task, model=task.build_model(cfg),
                                      datasets=datasets)
        self.trainable_params = self.runner.unwrap_dist_model(self.runner.model).trainable_parameters()
        # What RunnerEvlgen.train() builds before its first step.
        self.runner.log_config()
        _ = self.runner.optimizer, self.runner.scaler, self.runner.lr_scheduler, self.runner.train_loader
        self.runner.model.train()
        self.other_seconds = time.perf_counter() - start

    def step(self) -> None:
        self.runner.train_step()

    def finish(self) -> RunResult:
        """Save the last checkpoint, evaluate (captioning runs) and free the model."""
        start = time.perf_counter()
        runner, run = self.runner, self.plan
        runner.save_training_state(is_best=False)
        if run.evaluate:
            runner.evaluate(cur_epoch=f"iter{runner.iteration}", skip_reload=True)
        log = runner.step_log
        train_seconds = sum(seconds for _, _, seconds in log)
        result = RunResult(name=run.name, arch=self.arch, steps=run.steps, trainable_params=self.trainable_params,
                           losses=[(step, loss) for step, loss, _ in log], step_seconds=[s for _, _, s in log],
                           train_seconds=train_seconds,
                           wall_seconds=self.other_seconds + train_seconds + time.perf_counter() - start,
                           metrics=next(iter(runner.test_metrics.values()), {}))
        self.runner = None
        gc.collect()
        return result


def train_interleaved(cfg: DictConfig, out: Path, cache: Optional[FeatureCache],
                      width: Optional[int]) -> dict[str, RunResult]:
    """Train every run of :func:`plan`, one step of each in turn, so that all methods share the same
    machine conditions (load from other processes drifts; timed one after another, ratios would drift too)."""
    plans = plan(cfg)
    live: dict[str, LiveRun] = {}
    results: dict[str, RunResult] = {}
    log_freq = int(cfg.run.get("log_freq", 25))
    for step in range(int(cfg.compare.steps)):
        for run in plans:
            if step == run.start:
                path = out / "configs" / f"{run.name}.yaml"
                path.write_text(OmegaConf.to_yaml(run_config(cfg, run, out, width)))
                logger.info("compare: %s takes steps %d-%d of the budget", run.name, run.start + 1,
                            run.start + run.steps)
                live[run.name] = LiveRun(path, run, cache)
        for name, current in live.items():
            current.step()
        if (step + 1) % log_freq == 0:
            logger.info("compare: step %d  %s", step + 1, "  ".join(
                f"{name} {r.runner.step_log[-1][1]:.3f} ({r.runner.step_log[-1][2]:.1f} s)"
                for name, r in live.items() if r.runner.step_log))
        for run in plans:
            if step == run.start + run.steps - 1:
                results[run.name] = live.pop(run.name).finish()
    return results


# ---------------------------------------------------------------------------------------------- summary
METHOD_LABELS = {"evlgen": "EVLGen (single stage)",
                 "blip2_stage2_only": "BLIP-2 stage 2 only (no stage 1)",
                 "blip2_two_stage": "BLIP-2 stage 1 + stage 2"}
METHOD_RUNS = {"evlgen": ["evlgen"], "blip2_stage2_only": ["blip2_stage2_only"],
               "blip2_two_stage": ["blip2_stage1", "blip2_stage2_after_stage1"]}


def final_loss(losses: Sequence[tuple[int, float]], window: float) -> float:
    """Mean training loss over the last ``window`` share of the steps (at least one step)."""
    count = max(1, round(len(losses) * window))
    tail = [loss for _, loss in losses[-count:]]
    return sum(tail) / len(tail)


def connector_macs(cfg: DictConfig) -> dict[str, int]:
    """Connector MACs per training sample of each method's model (``lavis_evlgen.tools.flops``)."""
    macs = {}
    for name in METHODS:
        model, tokens, width = build_shape_model(method_model(cfg, name))
        macs[name] = count_stage(model, tokens, width, batch=2).macs_per_sample
        del model
    return macs


def summarize(results: dict[str, RunResult], macs: dict[str, int], window: float) -> list[dict[str, Any]]:
    """One row per method; the two-stage method adds up its stages (MACs: mean per step of the budget)."""
    run_method = {"evlgen": "evlgen", "blip2_stage2_only": "blip2_stage2", "blip2_stage1": "blip2_stage1",
                  "blip2_stage2_after_stage1": "blip2_stage2"}
    rows = []
    for method, runs in METHOD_RUNS.items():
        parts = [results[r] for r in runs]
        steps = sum(p.steps for p in parts)
        train_seconds = sum(p.train_seconds for p in parts)
        caption = parts[-1]
        rows.append({
            "method": method, "label": METHOD_LABELS[method], "runs": runs, "steps": steps,
            "trainable_params": [p.trainable_params for p in parts],
            "connector_macs_per_sample": [macs[run_method[p.name]] for p in parts],
            "connector_macs_per_sample_budget_mean": sum(macs[run_method[p.name]] * p.steps for p in parts) / steps,
            "steps_per_second": steps / train_seconds if train_seconds else float("nan"),
            "median_step_seconds": [statistics.median(p.step_seconds) for p in parts],
            "train_seconds": train_seconds, "wall_seconds": sum(p.wall_seconds for p in parts),
            "final_loss": final_loss(caption.losses, window), "cider": caption.metrics.get("CIDEr"),
            "metrics": caption.metrics})
    base = rows[0]
    for row in rows:
        row["ratio_to_evlgen"] = {
            "train_seconds": row["train_seconds"] / base["train_seconds"],
            "connector_macs_per_sample": row["connector_macs_per_sample_budget_mean"]
            / base["connector_macs_per_sample_budget_mean"],
            "steps_per_second": row["steps_per_second"] / base["steps_per_second"]}
    return rows


def machine() -> dict[str, Any]:
    """Where the comparison ran."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}


def _params(values: Sequence[int]) -> str:
    return " / ".join(f"{v / 1e6:.2f}M" for v in values)


def _macs(values: Sequence[float]) -> str:
    return " / ".join(format_macs(v) for v in values)


def markdown(rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> str:
    """The comparison as a Markdown report."""
    where = info["machine"]
    device = where["gpu"] or f"CPU only ({where['cpu_count']} cores, {where['torch_threads']} torch threads)"
    lines = [f"# EVLGen vs BLIP-2: same frozen parts, data, batch and {info['steps']} steps",
             "",
             f"Config `{info['config']}`, model type `{info['model_type']}`, batch {info['batch_size']}, "
             f"BLIP-2 stage 1 share {info['stage1_share']}, ViT features cached: {info['feature_cache']}. "
             f"Scored on split `{info['eval_split']}`.",
             f"Machine: {device}; {where['platform']}; torch {where['torch']}; load average at the end "
             f"(1, 5, 15 min; other processes shared the machine): {info['load_average']}. The methods were "
             "trained one step of each in turn, so that they ran under the same conditions.",
             "",
             "| method | trainable params | connector MACs / sample | steps / s | s / step (median) | train time (s) "
             "| wall time (s) | final loss | CIDEr |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cider = f"{r['cider'] * 100:.1f}" if r["cider"] is not None else "n/a"
        lines.append(f"| {r['label']} | {_params(r['trainable_params'])} | {_macs(r['connector_macs_per_sample'])} | "
                     f"{r['steps_per_second']:.2f} | {' / '.join(f'{v:.2f}' for v in r['median_step_seconds'])} | "
                     f"{r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | "
                     f"{r['final_loss']:.3f} | {cider} |")
    lines += ["", "Ratios to EVLGen, measured in this run:", "",
              "| method | train time | connector MACs / sample (budget mean) | steps / s |", "|---|---|---|---|"]
    for r in rows:
        ratio = r["ratio_to_evlgen"]
        lines.append(f"| {r['label']} | {ratio['train_seconds']:.2f}x | {ratio['connector_macs_per_sample']:.2f}x | "
                     f"{ratio['steps_per_second']:.2f}x |")
    lines += ["", "Two-stage rows list stage 1 / stage 2. Final loss: mean training loss of the last "
              f"{info['final_loss_window']:.0%} of the captioning steps (stage 2 for BLIP-2). CIDEr x 100. "
              "MACs: connector forward per sample (`python -m lavis_evlgen.tools.flops`)."]
    return "\n".join(lines) + "\n"


def plot_losses(results: dict[str, RunResult], path: Path) -> Path:
    """Captioning loss of the three methods over the step budget, and BLIP-2's stage-1 loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_caption, ax_stage1) = plt.subplots(1, 2, figsize=(12, 4.2))
    offset = results["blip2_stage1"].steps
    curves = {METHOD_LABELS["evlgen"]: (results["evlgen"].losses, 0),
              METHOD_LABELS["blip2_stage2_only"]: (results["blip2_stage2_only"].losses, 0),
              METHOD_LABELS["blip2_two_stage"] + " (stage 2)": (results["blip2_stage2_after_stage1"].losses, offset)}
    for label, (losses, shift) in curves.items():
        ax_caption.plot([s + shift for s, _ in losses], [v for _, v in losses], label=label)
    ax_caption.axvline(offset, color="grey", linestyle=":", linewidth=1)
    ax_caption.set(xlabel="step of the shared budget", ylabel="captioning loss (LLM cross-entropy)",
                   title="captioning loss")
    ax_caption.legend(fontsize=8)
    stage1 = results["blip2_stage1"].losses
    ax_stage1.plot([s for s, _ in stage1], [v for _, v in stage1], color="tab:green")
    ax_stage1.set(xlabel="step", ylabel="ITC + ITM + ITG", title="BLIP-2 stage 1 loss")
    for ax in (ax_caption, ax_stage1):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- main
def compare(cfg: DictConfig, config_name: str) -> dict[str, Any]:
    """Run the comparison and write its outputs; returns the JSON report."""
    out = Path(cfg.compare.output_dir).expanduser().resolve()
    (out / "configs").mkdir(parents=True, exist_ok=True)
    vision = shared_vision(cfg)
    cache = FeatureCache(vision, out / "features") if cfg.compare.get("feature_cache", True) else None
    width = cache.width if cache is not None else None
    try:
        results = train_interleaved(cfg, out, cache, width)
    finally:
        if cache is not None:
            cache.release()
        shutdown_distributed()
    macs = connector_macs(cfg)
    window = float(cfg.compare.get("final_loss_window", 0.1))
    rows = summarize(results, macs, window)
    info = {"config": config_name, "model_type": cfg.compare.model_type, "steps": int(cfg.compare.steps),
            "stage1_share": float(cfg.compare.get("stage1_share", 0.75)),
            "batch_size": int(cfg.run.batch_size_train), "feature_cache": cache is not None,
            "eval_split": cfg.compare.get("eval_split", "test"), "final_loss_window": window,
            "machine": machine(), "load_average": [round(x, 1) for x in os.getloadavg()]}
    report = {**info, "methods": rows, "runs": {name: asdict(r) for name, r in results.items()}}
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    (out / "comparison.md").write_text(markdown(rows, info))
    plot_losses(results, out / "loss_curves.png")
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", required=True, help="comparison YAML (see projects/compare/)")
    parser.add_argument("--options", nargs="+", default=[], help="override config settings: key=value ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.cfg_path, args.options)
        shared_vision(cfg)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    compare(cfg, args.cfg_path)
    out = Path(cfg.compare.output_dir)
    print((out / "comparison.md").read_text())
    print(f"written: {out / 'comparison.md'}, {out / 'comparison.json'}, {out / 'loss_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
