"""Time to the same caption quality: EVLGen against BLIP-2 on the same frozen parts, data and step budget.

    python -m lavis_evlgen.tools.compare --cfg-path projects/compare/embedded.yaml [--options key=value ...]

The methods and their stages come from the config (``lavis_evlgen.tools.compare_plan``). The command
prepares the embedded weights first where a stage uses them (as the quickstart does), then:

1. counts each stage's connector MACs per sample (``lavis_evlgen.tools.flops``);
2. chooses each method's peak learning rate by one rule: every lr of ``compare.sweep.lrs`` trains the
   method for ``compare.sweep.steps`` (seed ``compare.sweep.seed``), and the one with the highest val
   CIDEr at the end is kept (``methods.<name>.lr`` skips the sweep for that method);
3. trains every method with its lr for ``compare.steps`` under each of ``compare.seeds``, validating
   (CIDEr and the quickstart's grounding counts) every ``compare.eval_every`` steps and recording the
   steps, training seconds and wall seconds of each point; the test split is scored at the end on
   the checkpoint best on val;
4. times every stage's training step in turns in one process (``compare.step_cost``,
   ``lavis_evlgen.tools.compare_step_cost``), once, kept in ``step_cost.json``, so that times to a target can
   also be read at costs that a drifting machine slowed alike;
5. writes ``comparison.md``, ``comparison.json`` and ``cider_vs_time.png`` (``compare_report``): per
   method mean and spread over seeds of the final val and test CIDEr, and the training time, steps
   and connector MACs to first reach each target (``compare.reference``'s final val CIDEr, and
   ``compare.target_cider``), at the measured training seconds and at the step costs, plus the paper-scale
   connector MACs of ``compare.paper_scale``.

Every run (method, stage, seed or lr) trains in a process of its own (so no run's speed depends on the runs
before it) and in its own folder under ``compare.output_dir``, with the ``runner_evlgen`` runner and
``run.auto_resume``: rerunning the command skips finished runs (their
``result.json``) and continues unfinished ones from their last checkpoint, so the comparison can span
several commands. ``compare.stop_after_minutes`` stops the command cleanly (checkpoint saved) after that
long, exit status 3; rerun it to continue. Runs train one after another, every method under the first seed
before any under the next, so a stopped comparison already holds whole seeds; the machine's load average is
recorded at every validation point, since on a shared machine the load of other processes drifts.

With ``compare.feature_cache`` (the methods must share one frozen ViT, which is checked) the ViT runs
once per image and every method trains on its cached tokens, so the times compare what differs:
connector, LLM and losses. Vision and text processors are the first method's model type's.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from lavis.common.config import Config
from lavis.tasks import setup_task
from omegaconf import DictConfig, OmegaConf

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.atomic import atomic_write_text
from lavis_evlgen.common.cli_config import add_config_arguments, load_config, model_section, model_type_config
from lavis_evlgen.common.config_check import ConfigError, check_config
from lavis_evlgen.common.distributed import shutdown_distributed
from lavis_evlgen.datasets.feature_cache import CachedFeaturesDataset, cache_features
from lavis_evlgen.datasets.generate.shapes_caption import most_frequent_caption
from lavis_evlgen.embedded import prepare_embedded
from lavis_evlgen.models.llm import part_dtype
from lavis_evlgen.models.vision import build_vision_encoder
from lavis_evlgen.runners.preemption import PREEMPTION_SIGNALS, Preempted
from lavis_evlgen.runners.runner_evlgen import RunnerEvlgen
from lavis_evlgen.tools import compare_report
from lavis_evlgen.tools.compare_curves import Point, choose_lr
from lavis_evlgen.tools.compare_plan import Method, Stage, build_methods, check_plan
from lavis_evlgen.tools.compare_step_cost import build_runner, ready_to_step, summarise, time_in_turns
from lavis_evlgen.tools.flops import build_shape_model, count_stage, declared, report
from lavis_evlgen.tools.quickstart import grounding, references, subset_scores

logger = logging.getLogger(__name__)

EXIT_UNFINISHED = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RESULT = "result.json"
POINTS = "points.jsonl"
CLOCK = "clock.json"
STEP_COST = "step_cost.json"


# ---------------------------------------------------------------------------------------------- config
def read_config(cfg_path: str, options: Sequence[str] = ()) -> tuple[DictConfig, list[Method]]:
    """The comparison config with ``--options`` applied and its plan, checked (ConfigError naming the key)."""
    cfg = load_config(cfg_path, options)
    methods = check_plan(cfg)
    shared_vision(methods)
    return cfg, methods


def shared_vision(methods: Sequence[Method]) -> DictConfig:
    """The frozen ViT every stage uses (ConfigError if they differ: the comparison needs the same one)."""
    first = None
    for method in methods:
        for stage in method.stages:
            vision = OmegaConf.to_container(model_section(stage.model).vision, resolve=True)
            if first is None:
                first = vision
            elif vision != first:
                raise ConfigError(f"methods.{method.name}.stages.{stage.name}.model.vision: differs from the first "
                                  "stage's; the methods must share one frozen ViT (compare.vision sets it for all)")
    return OmegaConf.create(first)


def datasets_section(cfg: DictConfig, methods: Sequence[Method]) -> DictConfig:
    """``datasets`` with the first method's model-type processors wherever the config gives none."""
    model = methods[0].stages[-1].model
    preprocess = model_type_config(model.arch, model.model_type).get("preprocess", {})
    datasets = OmegaConf.create(OmegaConf.to_container(cfg.datasets))
    for name, section in datasets.items():
        section = section if section is not None else OmegaConf.create()
        for key in ("vis_processor", "text_processor"):
            if key not in section and key in preprocess:
                section[key] = preprocess[key]
        datasets[name] = section
    return datasets


def stage_config(cfg: DictConfig, methods: Sequence[Method], stage: Stage, job_dir: Path, seed: int, lr: float,
                 eval_every: int, test: bool, init_checkpoint: Optional[Path], width: Optional[int]) -> DictConfig:
    """The LAVIS experiment config of one stage's run in ``job_dir``."""
    model = OmegaConf.create(OmegaConf.to_container(stage.model))
    if width is not None:
        model.use_features = True
        model.vision = OmegaConf.merge(model.get("vision", {}), {"width": width})
    if init_checkpoint is not None:
        model.stage1_checkpoint = str(init_checkpoint)
    compare = cfg.compare
    every = eval_every if stage.captions else stage.steps
    run = OmegaConf.merge(cfg.run, {
        "task": stage.task, "runner": "runner_evlgen", "max_iters": stage.steps, "iters_per_inner_epoch": every,
        "save_every_iters": every, "warmup_steps": round(stage.steps * float(compare.get("warmup_share", 0.1))),
        "keep_last_k": 1, "auto_resume": True, "output_dir": str(job_dir.parent), "job_id": job_dir.name,
        "seed": seed, "init_lr": lr, "evaluate": False,
        "valid_splits": [compare.get("valid_split", "val")] if stage.captions else [],
        "test_splits": [compare.get("test_split", "test")] if stage.captions and test else []})
    if not stage.captions:
        run.pop("repetition_penalty", None)  # a decoding setting; the pretraining task generates nothing
    return OmegaConf.create({"model": model, "datasets": datasets_section(cfg, methods), "run": run})


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


# ---------------------------------------------------------------------------------------------- one run
class RecordingRunner(RunnerEvlgen):
    """runner_evlgen that records a validation point (steps, seconds, CIDEr, grounding) in ``points.jsonl``
    at every validation, keeps its clock across resumes (``clock.json``, written with every checkpoint),
    and stops like a preemption at ``deadline`` (``time.time()`` seconds) or once ``stop_request`` is set."""

    def __init__(self, *args, deadline: Optional[float] = None, stop_request: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self.stop_request = stop_request
        self.train_seconds = 0.0
        self.wall_offset = 0.0
        self.wall_start = time.perf_counter()
        self.test_metrics: dict[str, Any] = {}

    @property
    def wall_seconds(self) -> float:
        return self.wall_offset + time.perf_counter() - self.wall_start

    def train_step(self) -> tuple[Optional[float], int]:
        start = time.perf_counter()
        try:
            return super().train_step()
        finally:
            self.train_seconds += time.perf_counter() - start

    def preemption_agreed(self) -> bool:
        if self.deadline is not None and self.stop_signal is None and time.time() >= self.deadline:
            self.stop_signal = "compare.stop_after_minutes"
        if self.stop_request is not None and self.stop_signal is None and self.stop_request.is_set():
            self.stop_signal = "a preemption signal to the compare command"
        return super().preemption_agreed()

    def save_training_state(self, is_best: bool) -> None:
        super().save_training_state(is_best)
        path = self.output_dir / CLOCK
        clocks = json.loads(path.read_text()) if path.is_file() else {}
        clocks[str(self.iteration)] = {"train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds}
        atomic_write_text(path, json.dumps(clocks))

    def load_training_state(self, path: str, state: dict[str, Any]) -> None:
        super().load_training_state(path, state)
        clock_path = self.output_dir / CLOCK
        clocks = json.loads(clock_path.read_text()) if clock_path.is_file() else {}
        clock = clocks.get(str(self.iteration))
        if clock is None:
            raise FileNotFoundError(f"{clock_path}: no clock for iteration {self.iteration}, the checkpoint resumed "
                                    "from; delete the run folder to train it again")
        self.train_seconds = float(clock["train_seconds"])
        self.wall_offset, self.wall_start = float(clock["wall_seconds"]), time.perf_counter()
        kept = [p for p in read_points(self.output_dir) if p.steps <= self.iteration]
        atomic_write_text(self.output_dir / POINTS, "".join(json.dumps(vars(p)) + "\n" for p in kept))

    def eval_epoch(self, split_name: str, cur_epoch: Any, skip_reload: bool = False) -> Optional[dict]:
        metrics = super().eval_epoch(split_name, cur_epoch, skip_reload=skip_reload)
        if metrics is None:
            return metrics
        if split_name in self.valid_splits and cur_epoch == f"iter{self.iteration}":
            captions = {int(r["image_id"]): r["caption"]
                        for r in json.loads((self.result_dir / f"{split_name}_{cur_epoch}.json").read_text())}
            point = Point(self.iteration, self.train_seconds, self.wall_seconds, float(metrics["CIDEr"]),
                          split_grounding(self.task.gt_file, split_name, captions))
            with open(self.output_dir / POINTS, "a") as f:
                f.write(json.dumps({**vars(point), "load_average": list(os.getloadavg())}) + "\n")
        elif split_name in self.test_splits:
            self.test_metrics[split_name] = metrics
        return metrics


def split_grounding(gt_file: Optional[str], split: str, captions: dict[int, str]) -> dict[str, int]:
    """The quickstart's grounding counts where the data has a generator's ``scenes.json``, else nothing."""
    scenes = Path(gt_file).with_name("scenes.json") if gt_file else None
    if scenes is None or not scenes.is_file():
        return {}
    return grounding(json.loads(scenes.read_text())[split], captions)


def read_points(run_dir: Path) -> list[Point]:
    """A run's validation points, the last one kept where an iteration was validated twice (after a resume)."""
    path = run_dir / POINTS
    if not path.is_file():
        return []
    by_step: dict[int, Point] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            record.pop("load_average", None)
            by_step[int(record["steps"])] = Point(**record)
    return [by_step[s] for s in sorted(by_step)]


def train_run(config: DictConfig, job_dir: Path, cache: Optional[FeatureCache],
              deadline: Optional[float]) -> dict[str, Any]:
    """Train one stage's run (or continue it from its last checkpoint) in a process of its own and return its
    result, which is also written to ``result.json``; a run with one is returned as it is.

    Each run gets a fresh process so that no run's speed depends on the runs before it: in one process the
    LLM stages' steps slowed run after run (0.92, 1.29, 1.66 s for the same EVLGen step). A preemption signal
    to this command asks the run to stop after its step with a checkpoint (``Preempted`` is raised here).
    """
    done = job_dir / RESULT
    if done.is_file():
        return json.loads(done.read_text())
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(config))
    check_config(OmegaConf.load(path))
    context = multiprocessing.get_context("spawn")
    stop, (receive, send) = context.Event(), context.Pipe(duplex=False)
    vision = OmegaConf.to_container(cache.vision, resolve=True) if cache is not None else None
    child = context.Process(target=_run_process, name=f"compare-{job_dir.parent.name}-{job_dir.name}",
                            args=(str(path), str(job_dir), vision, str(cache.root) if cache else None, deadline,
                                  stop, send))
    child.start()
    send.close()
    with _stop_requests(stop, child):
        child.join()
    if done.is_file():
        return json.loads(done.read_text())
    if child.exitcode == EXIT_UNFINISHED and receive.poll():
        raise Preempted(*receive.recv())
    raise RuntimeError(f"{job_dir}: the run's process ended with exit status {child.exitcode} and no {RESULT} "
                       "(its error is printed above)")


@contextlib.contextmanager
def _stop_requests(stop: Any, child: multiprocessing.process.BaseProcess) -> Iterator[None]:
    """While ``child`` trains, a preemption signal to this process sets ``stop`` (the run then stops like a
    preempted one; a signal that reached both processes stops it once), and a second ends both at once."""
    received: list[int] = []

    def handle(signum: int, _frame: Any) -> None:
        if received:
            os.write(2, f"second preemption signal ({signal.Signals(signum).name}): ending the run's process "
                     "without a checkpoint\n".encode())
            child.kill()
            os._exit(128 + signum)
        received.append(signum)
        logger.warning("received %s: the run stops after its current step, with a checkpoint",
                       signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {sig: signal.signal(sig, handle) for sig in PREEMPTION_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_process(config_path: str, job_dir: str, vision: Optional[dict], cache_root: Optional[str],
                 deadline: Optional[float], stop: Any, report: Any) -> None:
    """A run's process: train, write ``result.json``; a stopped run sends (signal name, checkpoint) to ``report``
    and exits with EXIT_UNFINISHED."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    cache = FeatureCache(OmegaConf.create(vision), Path(cache_root)) if vision is not None else None
    try:
        _train(Path(config_path), Path(job_dir), cache, deadline, stop)
    except Preempted as stopped:
        report.send((stopped.signal_name, stopped.checkpoint))
        sys.exit(EXIT_UNFINISHED)
    finally:
        shutdown_distributed()


def _train(path: Path, job_dir: Path, cache: Optional[FeatureCache], deadline: Optional[float], stop: Any) -> None:
    runner = build_runner(path, cache.wrap if cache is not None else None, RecordingRunner, deadline=deadline,
                          stop_request=stop)
    runner.train()
    result = {"steps": runner.iteration, "train_seconds": runner.train_seconds, "wall_seconds": runner.wall_seconds,
              "trainable_params": runner.unwrap_dist_model(runner.model).trainable_parameters(),
              "points": [vars(p) for p in read_points(job_dir)], "test": runner.test_metrics, "cpu": cpu_model()}
    atomic_write_text(job_dir / RESULT, json.dumps(result, indent=2))


def train_method(cfg: DictConfig, methods: Sequence[Method], method: Method, root: Path, seed: int, lr: float,
                 eval_every: int, test: bool, cache: Optional[FeatureCache], width: Optional[int],
                 deadline: Optional[float]) -> dict[str, Any]:
    """Every stage of ``method`` in order under ``root``; the curve is its captioning stages' points placed on
    the method's budget (steps and seconds after the earlier stages)."""
    stages, points = {}, []
    steps = train_seconds = wall_seconds = 0.0
    for stage in method.stages:
        init = root / stage.init_from / "checkpoint_latest.pth" if stage.init_from else None
        config = stage_config(cfg, methods, stage, root / stage.name, seed, lr, eval_every, test, init, width)
        logger.info("compare: %s, %s: %d steps (seed %d, lr %g)", method.name, stage.name, stage.steps, seed, lr)
        result = train_run(config, root / stage.name, cache, deadline)
        points += [Point(**{**p, "steps": p["steps"] + stage.start, "train_seconds": p["train_seconds"] + train_seconds,
                            "wall_seconds": p["wall_seconds"] + wall_seconds}) for p in result["points"]]
        steps, train_seconds, wall_seconds = (steps + result["steps"], train_seconds + result["train_seconds"],
                                              wall_seconds + result["wall_seconds"])
        stages[stage.name] = result
    return {"seed": seed, "lr": lr, "steps": int(steps), "train_seconds": train_seconds, "wall_seconds": wall_seconds,
            "points": [vars(p) for p in points], "test": stages[method.stages[-1].name]["test"],
            "stages": {name: {k: v for k, v in r.items() if k != "points"} for name, r in stages.items()}}


# ---------------------------------------------------------------------------------------------- phases
def sweep_lrs(cfg: DictConfig, methods: Sequence[Method], out: Path, cache: Optional[FeatureCache],
              width: Optional[int], deadline: Optional[float]) -> dict[str, Any]:
    """Each method's lr: fixed by the config, or the sweep's best final val CIDEr at the short budget."""
    sweep = cfg.compare.get("sweep") or {}
    chosen = {}
    for method in methods:
        if method.lr is not None:
            chosen[method.name] = {"lr": method.lr, "how": "fixed by methods.<name>.lr", "final_val_cider": {}}
            continue
        [short] = build_methods(cfg, int(sweep.steps), only={method.name})
        finals = {}
        for lr in sweep.lrs:
            run = train_method(cfg, methods, short, out / "sweep" / method.name / f"lr{float(lr):g}",
                               int(sweep.get("seed", 0)), float(lr), short.stages[-1].steps, False, cache, width,
                               deadline)
            finals[float(lr)] = run["points"][-1]["cider"]
        chosen[method.name] = {"lr": choose_lr(finals), "final_val_cider": finals,
                               "how": f"highest val CIDEr after {int(sweep.steps)} steps (seed "
                                      f"{int(sweep.get('seed', 0))}) among {[float(x) for x in sweep.lrs]}"}
    return chosen


def step_costs(cfg: DictConfig, methods: Sequence[Method], out: Path, cache: Optional[FeatureCache],
               width: Optional[int], lrs: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Every stage's step cost, timed in turns in a process of its own (``compare_step_cost``), measured once and
    kept in ``step_cost.json``; None without ``compare.step_cost``."""
    spec = cfg.compare.get("step_cost")
    if not spec:
        return None
    path = out / STEP_COST
    if path.is_file():
        return json.loads(path.read_text())
    configs = {}
    for method in methods:
        for stage in method.stages:
            job_dir = out / "step_cost" / method.name / stage.name
            config = stage_config(cfg, methods, stage, job_dir, 0, lrs[method.name]["lr"], stage.steps, False, None,
                                  width)
            config.run.valid_splits, config.run.auto_resume = [], False
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
            configs[f"{method.name}/{stage.name}"] = str(job_dir / "config.yaml")
    steps, warmup = int(spec.get("steps", 10)), int(spec.get("warmup", 2))
    logger.info("compare: timing %d steps of each of %s in turns (after %d untimed rounds)", steps, list(configs),
                warmup)
    vision = OmegaConf.to_container(cache.vision, resolve=True) if cache is not None else None
    child = multiprocessing.get_context("spawn").Process(
        target=_step_cost_process, name="compare-step-cost",
        args=(configs, vision, str(cache.root) if cache else None, steps, warmup, str(path)))
    child.start()
    child.join()
    if not path.is_file():
        raise RuntimeError(f"compare.step_cost: the timing process ended with exit status {child.exitcode} and no "
                           f"{path} (its error is printed above)")
    return json.loads(path.read_text())


def _step_cost_process(configs: dict[str, str], vision: Optional[dict], cache_root: Optional[str], steps: int,
                       warmup: int, path: str) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    cache = FeatureCache(OmegaConf.create(vision), Path(cache_root)) if vision is not None else None
    try:
        runners = {name: ready_to_step(build_runner(Path(config), cache.wrap if cache is not None else None))
                   for name, config in configs.items()}
        if cache is not None:
            cache.release()
        seconds = time_in_turns(runners, steps, warmup)
    finally:
        shutdown_distributed()
    result = {"steps": steps, "warmup": warmup, "machine": machine(),
              "stages": {name: summarise(values) for name, values in seconds.items()}, "seconds": seconds}
    atomic_write_text(Path(path), json.dumps(result, indent=2))


def connector_macs(methods: Sequence[Method], batch: int) -> dict[str, dict[str, int]]:
    """Connector MACs per training sample of every stage (``lavis_evlgen.tools.flops``, at ``batch``)."""
    macs: dict[str, dict[str, int]] = {}
    for method in methods:
        for stage in method.stages:
            model, tokens, width = build_shape_model(stage.model)
            count = count_stage(model, tokens, width, batch=max(batch, int(declared(type(model), "MIN_BATCH"))))
            macs.setdefault(method.name, {})[stage.name] = count.macs_per_sample
            del model
    return macs


def paper_scale(schedules: Optional[DictConfig], out: Path) -> dict[str, Any]:
    """Connector MACs of each schedule in ``compare.paper_scale`` (label: experiment configs run one after
    another), and their ratio to the first; counted once and kept in ``paper_scale.json``."""
    if not schedules:
        return {}
    path = out / "paper_scale.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    per_config = known.get("per_config", {})
    for label, configs in schedules.items():
        for config in configs:
            if config not in per_config:
                [stage] = report(load_config(config))
                if not stage.run:
                    raise ConfigError(f"compare.paper_scale.{label}: {config} has no run.max_iters and batch")
                per_config[config] = {"stage": stage.stage, "macs_per_sample": stage.macs_per_sample, **stage.run}
    totals = {label: sum(per_config[c]["connector_macs_forward"] for c in configs)
              for label, configs in schedules.items()}
    first = next(iter(totals.values()))
    result = {"per_config": per_config,
              "schedules": {label: {"configs": list(configs), "connector_macs_forward": totals[label],
                                    "ratio_to_first": totals[label] / first}
                            for label, configs in schedules.items()}}
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def most_frequent_caption_cider(run_config: Path, split: str, out: Path) -> Optional[float]:
    """Val CIDEr of the most frequent training caption given to every image (the constant-caption floor), on the
    datasets of a run's config as LAVIS builds them; None where the data has no training captions file."""
    cfg = Config(argparse.Namespace(cfg_path=str(run_config), options=[]))
    (splits,) = setup_task(cfg).build_datasets(cfg).values()
    train_ann = Path(getattr(splits["train"], "vis_root", "")) / "train.json"
    gt_file = getattr(splits[split], "gt_file", None)
    if gt_file is None or not train_ann.is_file():
        return None
    caption = most_frequent_caption(train_ann)
    return subset_scores(gt_file, {i: caption for i in references(gt_file)}, out / "baseline_val.json")["CIDEr"]


def cpu_model() -> Optional[str]:
    """The CPU's model name and family from /proc/cpuinfo (wall times differ 2x between EPYC generations)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    except OSError:
        return None
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    if "model name" not in fields:
        return None
    return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def machine() -> dict[str, Any]:
    """Where the comparison ran."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------- main
def compare(cfg: DictConfig, methods: Sequence[Method], config_name: str) -> dict[str, Any]:
    """Run (or continue) the comparison and write its outputs; returns the JSON report.
    Raises Preempted when ``compare.stop_after_minutes`` ran out (everything so far is saved)."""
    start = time.time()
    compare_cfg = cfg.compare
    out = Path(compare_cfg.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    minutes = compare_cfg.get("stop_after_minutes")
    deadline = start + 60 * float(minutes) if minutes is not None else None
    ledger_path = out / "commands.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else []
    ledger.append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": None, "machine": machine()})
    if any(stage.model.model_type == "embedded" for m in methods for stage in m.stages):
        prepare_embedded()
    cache = FeatureCache(shared_vision(methods), out / "features") if compare_cfg.get("feature_cache", True) else None
    width = cache.width if cache is not None else None
    if cache is not None:
        cache.release()  # the runs' own processes encode what the cache lacks
    try:
        lrs = sweep_lrs(cfg, methods, out, cache, width, deadline)
        runs: dict[str, dict[int, Any]] = {m.name: {} for m in methods}
        for seed in compare_cfg.seeds:
            for m in methods:
                runs[m.name][seed] = train_method(cfg, methods, m, out / "runs" / m.name / f"seed{seed}", seed,
                                                  lrs[m.name]["lr"], int(compare_cfg.eval_every), True, cache,
                                                  width, deadline)
        costs = step_costs(cfg, methods, out, cache, width, lrs)
    finally:
        if cache is not None:
            cache.release()
        ledger[-1]["seconds"] = round(time.time() - start, 1)
        atomic_write_text(ledger_path, json.dumps(ledger, indent=2))
    macs = connector_macs(methods, int(cfg.run.batch_size_train))
    info = {"config": config_name, "model_type": compare_cfg.model_type, "steps": int(compare_cfg.steps),
            "eval_every": int(compare_cfg.eval_every), "seeds": list(compare_cfg.seeds),
            "batch_size": int(cfg.run.batch_size_train), "feature_cache": cache is not None,
            "valid_split": compare_cfg.get("valid_split", "val"), "test_split": compare_cfg.get("test_split", "test"),
            "reference": compare_cfg.reference, "target_cider": compare_cfg.get("target_cider"),
            "machine": machine(), "commands": ledger,
            "most_frequent_caption_val_cider": most_frequent_caption_cider(
                out / "runs" / methods[0].name / f"seed{compare_cfg.seeds[0]}" / methods[0].stages[-1].name
                / "config.yaml", compare_cfg.get("valid_split", "val"), out)}
    result = compare_report.build(info, methods, lrs, runs, macs, paper_scale(compare_cfg.get("paper_scale"), out),
                                  costs)
    atomic_write_text(out / "comparison.json", json.dumps(result, indent=2))
    atomic_write_text(out / "comparison.md", compare_report.markdown(result))
    compare_report.plot(result, out / "cider_vs_time.png")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = add_config_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        cfg, methods = read_config(args.cfg_path, args.options)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    try:
        compare(cfg, methods, args.cfg_path)
    except Preempted as stop:
        print(f"stopped ({stop}); rerun the same command to continue", file=sys.stderr)
        return EXIT_UNFINISHED
    out = Path(cfg.compare.output_dir)
    print((out / "comparison.md").read_text())
    print(f"written: {out / 'comparison.md'}, {out / 'comparison.json'}, {out / 'cider_vs_time.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
