"""``runner_evlgen``: iteration-based training on GPUs or CPUs with exact resume and safe checkpoints.

Subclasses LAVIS's RunnerBase and replaces the parts that only work on CUDA or cannot resume:

* device and DDP: the model is moved and wrapped once (LAVIS's runner_base.py:85-95 leaves it
  unwrapped on CPU); DDP gets ``device_ids`` only on a GPU; no CUDA stream on CPU (no PrefetchLoader,
  dataloader_utils.py:56); barriers only when distributed (runner_base.py:406); evaluation always gets
  ``cuda_enabled`` (runner_base.py:469).
* batch: ``run.global_batch_size`` fixes the samples per optimizer step; the accumulation steps are
  derived from the launched world size (``lavis_evlgen.runners.global_batch``), else
  ``run.accum_grad_iters`` is used as given.
* data mixture: ``run.train_dataset_ratios`` draws each micro-batch whole from one training dataset in
  those ratios, as the authors' runner does (``lavis_evlgen.runners.ratio_loader``); without it the
  training datasets are concatenated, each sampled in proportion to its size.
* schedule: an iteration is one optimizer step (``accum_grad_iters`` micro-batches). Training
  runs ``run.max_iters`` iterations and every ``run.iters_per_inner_epoch`` evaluates the
  ``run.valid_splits`` and saves. Epoch configs (``run.max_epoch`` without ``run.max_iters``) run
  one inner epoch per pass over the training data. The LAVIS scheduler named by ``run.lr_sched`` is
  stepped with ``(iteration // iters_per_inner_epoch, iteration % iters_per_inner_epoch)``.
* checkpoints (``lavis_evlgen.common.checkpoint``): trainable weights, optimizer, grad scaler,
  iteration, every rank's data position and RNG states, best metric and the config; written
  atomically every ``run.save_every_iters``, at every inner-epoch end that finds a new best, and at
  the end; ``run.keep_last_k`` numbered files kept. ``run.resume_ckpt_path`` continues exactly;
  ``run.auto_resume`` continues from the job folder's latest readable checkpoint
  (``lavis_evlgen.runners.resume``), warning about every setting that breaks exactness. A failed save
  keeps the previous checkpoint and stops the run or goes on (``run.on_save_error: stop|continue``).
* preemption (``lavis_evlgen.runners.preemption``): SIGTERM or SIGUSR1 ends training after the
  current optimizer step on every rank, with a checkpoint and exit status 4.
* robustness: a non-finite loss stops the run naming the step (``run.on_nonfinite_loss: stop``) or
  drops that update (``skip``); ``run.max_grad_norm`` clips the gradient norm (off by default, as in
  the paper); unreadable samples (``batch["n_skipped"]``) are counted over steps and
  ranks and reported as ``skipped_samples``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from lavis.common.dist_utils import get_rank, get_world_size, is_main_process
from lavis.common.registry import registry
from lavis.datasets.data_utils import apply_to_sample, concat_datasets, reorg_datasets_by_split
from lavis.runners.runner_base import RunnerBase
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Dataset

import lavis_evlgen.common.lr_schedules  # noqa: F401  registers linear_warmup_cosine_iter_lr
from lavis_evlgen.common.checkpoint import (
    CheckpointManager,
    CheckpointSaveError,
    capture_rng_state,
    load_checkpoint,
    load_trainable_state_dict,
    restore_rng_state,
    seed_all,
    trainable_state_dict,
)
from lavis_evlgen.common.config_check import ConfigError, optional_number, require
from lavis_evlgen.common.distributed import all_gather_object, all_reduce_sum, broadcast_object
from lavis_evlgen.common.paths import cache_dir
from lavis_evlgen.common.precision import AMP_DTYPES, resolve_precision
from lavis_evlgen.datasets.datasets.caption import SKIPPED_KEY
from lavis_evlgen.datasets.feature_cache import apply_feature_cache
from lavis_evlgen.runners.global_batch import accumulation_steps, check_global_batch
from lavis_evlgen.runners.preemption import Preempted, PreemptionWatch
from lavis_evlgen.runners.ratio_loader import RatioTrainLoader, read_ratios
from lavis_evlgen.runners.resume import run_signature, signature_changes
from lavis_evlgen.runners.tracking import LOSS_LOG, build_tracker, check_report_to
from lavis_evlgen.runners.train_loader import ResumableTrainLoader, eval_loader

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "runner_evlgen/1"
NONFINITE_POLICIES = ("stop", "skip")
SAVE_ERROR_POLICIES = ("stop", "continue")


_log_file_handler: Optional[logging.Handler] = None


def close_log_file() -> None:
    """Stop copying the root logger's records to the last runner's ``run.log`` (before its folder goes away)."""
    global _log_file_handler
    if _log_file_handler is not None:
        logging.getLogger().removeHandler(_log_file_handler)
        _log_file_handler.close()
        _log_file_handler = None


def _log_to_file(path: Path) -> None:
    """Copy the root logger's records to ``path`` (replacing the file of a previous runner)."""
    global _log_file_handler
    close_log_file()
    _log_file_handler = logging.FileHandler(path)
    _log_file_handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    logging.getLogger().addHandler(_log_file_handler)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite and ``run.on_nonfinite_loss`` is ``stop``."""


def _check_int(run: DictConfig, key: str, minimum: int = 1) -> None:
    """ConfigError unless ``run.<key>`` is absent or an integer >= ``minimum``."""
    value = run.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
        raise ConfigError(f"run.{key}: must be an integer >= {minimum}, got {value!r}")


@registry.register_runner("runner_evlgen")
class RunnerEvlgen(RunnerBase):
    """Iteration-based LAVIS runner for CPU, gloo and GPU runs with exact resume (see module doc)."""

    def __init__(self, cfg, task, model, datasets, job_id: str):
        super().__init__(cfg, task, model, datasets, job_id)
        run = cfg.run_cfg
        self.precision = resolve_precision(run, self.device)
        logger.info(self.precision.describe())
        self.on_nonfinite = run.get("on_nonfinite_loss", "stop")
        self.iteration = 0
        self.best: dict[str, Any] = {"agg_metrics": None, "iteration": None, "path": None}
        self.last_saved: Optional[str] = None
        self.checkpoints = (CheckpointManager(self.output_dir, int(run.get("keep_last_k", 2)))
                            if is_main_process() else None)
        self.tracker = build_tracker(run, self.output_dir, job_id, OmegaConf.to_container(cfg.config, resolve=True),
                                     is_main_process())
        self.grad_norm: Optional[float] = None
        self._accum_grad_iters = 1 if self.evaluate_only else accumulation_steps(run, get_world_size())
        if not self.evaluate_only:
            logger.info("global batch %d = %d per process x %d process(es) x %d accumulation step(s)%s",
                        int(run.batch_size_train) * get_world_size() * self._accum_grad_iters,
                        int(run.batch_size_train), get_world_size(), self._accum_grad_iters,
                        " (derived from run.global_batch_size)" if run.get("global_batch_size") else "")
        self.preemption = PreemptionWatch()
        self.stop_signal: Optional[str] = None
        self.pending_validation = False
        self.skipped_total = 0
        self.saved_iteration: Optional[int] = None

    # ------------------------------------------------------------------ config
    @classmethod
    def check_run_config(cls, run: DictConfig, evaluate_only: bool) -> None:
        """Raise ConfigError naming the first missing or invalid ``run`` key this runner needs."""
        require(run, "output_dir", "run")
        if run.get("valid_splits") or run.get("test_splits") or evaluate_only:
            require(run, "batch_size_eval", "run")
        if not evaluate_only and not run.get("evaluate", False):
            if not run.get("train_splits"):
                raise ConfigError("run.train_splits: missing (list the training splits, e.g. [train])")
            for key in ("batch_size_train", "lr_sched", "init_lr", "min_lr", "weight_decay"):
                require(run, key, "run")
            if run.get("max_iters") is None and run.get("max_epoch") is None:
                raise ConfigError("run.max_iters: missing (or give run.max_epoch for epoch-based training)")
            if registry.get_lr_scheduler_class(run.lr_sched) is None:
                raise ConfigError(f"run.lr_sched: unknown scheduler '{run.lr_sched}'; registered: "
                                  f"{sorted(registry.mapping['lr_scheduler_name_mapping'])}")
        for key in ("max_iters", "max_epoch", "iters_per_inner_epoch", "save_every_iters", "batch_size_train",
                    "batch_size_eval", "accum_grad_iters", "log_freq"):
            _check_int(run, key)
        if run.get("amp_dtype", "bf16") not in AMP_DTYPES:
            raise ConfigError(f"run.amp_dtype: expected one of {sorted(AMP_DTYPES)}, got '{run.amp_dtype}'")
        optional_number(run, "max_grad_norm", "run", lambda v: v > 0, "must be a positive number")
        _check_int(run, "keep_last_k", minimum=0)
        _check_int(run, "num_workers", minimum=0)
        check_report_to(run)
        check_global_batch(run)
        if read_ratios(run) is not None and not evaluate_only and not run.get("evaluate", False) \
                and run.get("max_iters") is None:
            raise ConfigError("run.train_dataset_ratios: needs run.max_iters (ratio-mixed data has no epoch length)")
        if run.get("on_nonfinite_loss", "stop") not in NONFINITE_POLICIES:
            raise ConfigError(f"run.on_nonfinite_loss: expected one of {list(NONFINITE_POLICIES)}, "
                              f"got '{run.on_nonfinite_loss}'")
        if run.get("on_save_error", "stop") not in SAVE_ERROR_POLICIES:
            raise ConfigError(f"run.on_save_error: expected one of {list(SAVE_ERROR_POLICIES)}, "
                              f"got '{run.on_save_error}'")
        if not isinstance(run.get("auto_resume", False), bool):
            raise ConfigError(f"run.auto_resume: expected true or false, got {run.auto_resume!r}")

    def setup_output_dir(self) -> None:
        """``run.output_dir/<job_id>`` (relative to the working directory) and its ``result/`` folder."""
        base = Path(self.config.run_cfg.output_dir).expanduser()
        output_dir = (base if base.is_absolute() else Path.cwd() / base) / self.job_id
        result_dir = output_dir / "result"
        result_dir.mkdir(parents=True, exist_ok=True)
        # registry.register_path refuses to overwrite; a second runner in one process must.
        registry.mapping["paths"]["output_dir"] = str(output_dir)
        registry.mapping["paths"]["result_dir"] = str(result_dir)
        self.output_dir = output_dir
        self.result_dir = result_dir
        if is_main_process():
            _log_to_file(output_dir / "run.log")

    # ------------------------------------------------------------------ pieces
    @property
    def use_distributed(self) -> bool:
        return bool(self.config.run_cfg.get("distributed", False))

    @property
    def model(self) -> torch.nn.Module:
        """The model on the run device, DDP-wrapped when distributed (built once)."""
        if self._wrapped_model is None:
            self._model = self._model.to(self.device)
            if self.use_distributed:
                device_ids = [self.device.index] if self.device.type == "cuda" else None
                self._wrapped_model = DDP(self._model, device_ids=device_ids,
                                          find_unused_parameters=bool(
                                              self.config.run_cfg.get("find_unused_parameters", False)))
            else:
                self._wrapped_model = self._model
        return self._wrapped_model

    @property
    def evaluate_only(self) -> bool:
        return bool(self.config.run_cfg.get("evaluate", False))

    @property
    def scaler(self) -> Optional[torch.amp.GradScaler]:
        if self._scaler is None:
            self._scaler = self.precision.grad_scaler()
        return self._scaler

    @property
    def accum_grad_iters(self) -> int:
        return self._accum_grad_iters

    @property
    def max_iters(self) -> int:
        run = self.config.run_cfg
        if run.get("max_iters") is not None:
            return int(run.max_iters)
        return int(run.max_epoch) * self.iters_per_inner_epoch

    @property
    def iters_per_inner_epoch(self) -> int:
        run = self.config.run_cfg
        if run.get("max_iters") is not None:
            return int(run.get("iters_per_inner_epoch", run.max_iters))
        return max(len(self.train_loader) // self.accum_grad_iters, 1)

    @property
    def max_epoch(self) -> int:
        return math.ceil(self.max_iters / self.iters_per_inner_epoch)

    @property
    def save_every_iters(self) -> int:
        return int(self.config.run_cfg.get("save_every_iters", self.iters_per_inner_epoch))

    @property
    def lr_scheduler(self):
        """The ``run.lr_sched`` scheduler; also given ``max_iters`` and ``iters_per_epoch``."""
        if self._lr_sched is None:
            run = self.config.run_cfg
            self._lr_sched = registry.get_lr_scheduler_class(run.lr_sched)(
                optimizer=self.optimizer, max_epoch=self.max_epoch, min_lr=self.min_lr, init_lr=self.init_lr,
                decay_rate=run.get("lr_decay_rate", None), warmup_start_lr=run.get("warmup_lr", -1),
                warmup_steps=run.get("warmup_steps", 0), max_iters=self.max_iters,
                iters_per_epoch=self.iters_per_inner_epoch)
        return self._lr_sched

    @property
    def dataloaders(self) -> dict:
        """Resumable loaders for the training split, in-order loaders for the splits evaluated."""
        if self._dataloaders is None:
            run = self.config.run_cfg
            if run.get("feature_cache", False):
                self.datasets = self._feature_cached(self.datasets)
            rank, world = get_rank(), get_world_size()
            pin = self.cuda_enabled
            workers = int(run.get("num_workers", 2))
            training = [] if self.evaluate_only else list(self.train_splits)
            ratios = read_ratios(run) if training else None
            loaders = {}
            if ratios is not None:
                loaders[training[0]] = self._ratio_loader(ratios, training[0], workers, pin)
                self.datasets = {name: {s: d for s, d in splits.items() if s != training[0]}
                                 for name, splits in self.datasets.items()}
            self.datasets = concat_datasets(reorg_datasets_by_split(self.datasets))
            for split in dict.fromkeys(training + list(self.valid_splits) + list(self.test_splits)):
                if split in loaders:
                    continue
                if split not in self.datasets:
                    raise ConfigError(f"run.train_splits/valid_splits/test_splits: no split '{split}' in the "
                                      f"datasets; have {sorted(self.datasets)}")
                dataset = self.datasets[split]
                if not isinstance(dataset, Dataset) or not hasattr(dataset, "__len__"):
                    raise ValueError(f"runner_evlgen needs map-style datasets; split '{split}' is "
                                     f"{type(dataset).__name__}")
                collater = self._collater(dataset)
                if split in training:
                    loaders[split] = ResumableTrainLoader(dataset, collater, int(run.batch_size_train), workers,
                                                          int(run.get("seed", 42)), rank, world, pin)
                else:
                    loaders[split] = eval_loader(dataset, collater, int(run.batch_size_eval), workers,
                                                 rank, world, pin)
                logger.info("split %s: %d records", split, len(dataset))
            self._dataloaders = loaders
        return self._dataloaders

    def _ratio_loader(self, ratios: dict[str, float], split: str, workers: int, pin: bool) -> RatioTrainLoader:
        """One resumable stream per training dataset, mixed per micro-batch by ``run.train_dataset_ratios``."""
        run = self.config.run_cfg
        if len(self.train_splits) != 1:
            raise ConfigError(f"run.train_splits: runner_evlgen trains on exactly one split, "
                              f"got {list(self.train_splits)}")
        seed, rank, world = int(run.get("seed", 42)), get_rank(), get_world_size()
        streams = {name: ResumableTrainLoader(splits[split], self._collater(splits[split]), int(run.batch_size_train),
                                              workers, seed, rank, world, pin)
                   for name, splits in self.datasets.items() if split in splits}
        loader = RatioTrainLoader(streams, ratios, seed, rank, world)
        logger.info("split %s: one dataset per micro-batch by run.train_dataset_ratios: %s", split, loader.describe())
        return loader

    def _feature_cached(self, datasets: dict) -> dict:
        """``run.feature_cache``: frozen ViT outputs computed once (keyed by the vision config), then read."""
        model = self.unwrap_dist_model(self.model)
        vision = OmegaConf.to_yaml(self.config.model_cfg.get("vision", {}), resolve=True)
        root = Path(self.config.run_cfg.get("feature_cache_dir", cache_dir() / "features"))
        return apply_feature_cache(datasets, model, f"{self.config.model_cfg.arch}\n{vision}", root)

    @staticmethod
    def _collater(dataset: Dataset):
        """The dataset's collater; for a one-dataset concatenation, that dataset's own."""
        inner = getattr(dataset, "datasets", None)
        if inner is not None and len(inner) == 1:
            dataset = inner[0]
        return getattr(dataset, "collater", None)

    @property
    def train_loader(self) -> ResumableTrainLoader | RatioTrainLoader:
        splits = self.train_splits
        if len(splits) != 1:
            raise ConfigError(f"run.train_splits: runner_evlgen trains on exactly one split, got {list(splits)}")
        return self.dataloaders[splits[0]]

    # ------------------------------------------------------------------ training
    def train(self) -> None:
        """Train to ``max_iters`` (or evaluate only, with ``run.evaluate``), then test."""
        start = time.time()
        self.log_config()
        if self.evaluate_only:
            self.evaluate(cur_epoch="eval", skip_reload=True)
            self.tracker.close()
            return
        # Build every part before restoring RNG states, so that nothing built later draws from them.
        _ = self.model, self.optimizer, self.scaler, self.lr_scheduler, self.train_loader
        resume = self.resume_point()
        if resume is not None:
            self.load_training_state(*resume)
        logger.info("training to iteration %d (from %d); inner epochs of %d iterations, saving every %d, "
                    "%d micro-batch(es) of %d per iteration and process, %d process(es)", self.max_iters,
                    self.iteration, self.iters_per_inner_epoch, self.save_every_iters, self.accum_grad_iters,
                    self.config.run_cfg.batch_size_train, get_world_size())
        with self.preemption:
            if self.pending_validation:
                self.end_inner_epoch()
            while self.iteration < self.max_iters:
                end = min((self.iteration // self.iters_per_inner_epoch + 1) * self.iters_per_inner_epoch,
                          self.max_iters)
                self.log_stats(self.train_iters(end), "train")
                self.end_inner_epoch()
            has_best = self.best["path"] is not None
            self.evaluate(cur_epoch="best" if has_best else f"iter{self.iteration}", skip_reload=not has_best)
            if self.preemption.requested:
                logger.warning("%s arrived after the last step: the final checkpoint and evaluation are complete",
                               PreemptionWatch.name(self.preemption.received))
        logger.info("training time %.1f s", time.time() - start)
        self.tracker.close()

    def end_inner_epoch(self) -> None:
        """Validate, then save if there is a new best, at a saving step, or at the end."""
        self.pending_validation = False
        is_best = self.validate()
        if is_best or self.iteration % self.save_every_iters == 0 or self.iteration == self.max_iters:
            self.save_training_state(is_best)

    def train_iters(self, end: int) -> dict[str, Any]:
        """Run iterations up to ``end``; return the inner epoch's stats (averaged over ranks)."""
        model = self.model
        model.train()
        first = self.iteration
        losses: list[float] = []
        skipped = nonfinite = 0
        tic = time.time()
        samples_per_step = int(self.config.run_cfg.batch_size_train) * self.accum_grad_iters * get_world_size()
        while self.iteration < end:
            step_start = time.time()
            loss, n_skipped = self.train_step()
            step_seconds = time.time() - step_start
            skipped += n_skipped
            self.skipped_total += n_skipped
            if loss is None:
                nonfinite += 1
            else:
                losses.append(loss)
                self._log_loss(loss)
            self.tracker.log({"loss": loss, "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": self.grad_norm,
                              "steps_per_second": 1 / step_seconds,
                              "samples_per_second": samples_per_step / step_seconds,
                              "skipped_samples": n_skipped}, self.iteration, prefix="train")
            if self.iteration % self.log_freq == 0 or self.iteration == end:
                per_iter = (time.time() - tic) / (self.iteration - first)
                logger.info("iteration %d/%d  loss %s  lr %.3e  %.3f s/it  ETA %s", self.iteration, self.max_iters,
                            "dropped" if loss is None else f"{loss:.4f}", self.optimizer.param_groups[0]["lr"],
                            per_iter, _duration(per_iter * (self.max_iters - self.iteration)))
            if self.iteration % self.save_every_iters == 0 and self.iteration != end:
                self.save_training_state(is_best=False)
            if self.preemption_agreed():
                self._stop_for_preemption(inner_epoch_done=self.iteration == end)
        logger.info("iterations %d-%d: %d unreadable sample(s) skipped over all processes", first + 1, end, skipped)
        return {"iteration": self.iteration, "loss": sum(losses) / max(len(losses), 1),
                "lr": self.optimizer.param_groups[0]["lr"], "skipped_samples": skipped,
                "nonfinite_steps": nonfinite, "data_epoch": self.train_loader.epoch,
                "seconds_per_iter": (time.time() - tic) / max(end - first, 1)}

    def _log_loss(self, loss: float) -> None:
        """Append this step's loss to ``train_loss.jsonl`` (rank 0), for loss curves."""
        if is_main_process():
            with open(self.output_dir / LOSS_LOG, "a") as f:
                f.write(json.dumps({"iteration": self.iteration, "loss": loss,
                                    "lr": self.optimizer.param_groups[0]["lr"]}) + "\n")

    def train_step(self) -> tuple[Optional[float], int]:
        """One optimizer step; returns (loss averaged over ranks, or None if dropped; skipped samples)."""
        it, per_epoch, accum = self.iteration, self.iters_per_inner_epoch, self.accum_grad_iters
        self.lr_scheduler.step(cur_epoch=it // per_epoch, cur_step=it % per_epoch)
        model = self.model
        loss_sum = torch.zeros((), device=self.device)
        skipped = 0
        for micro in range(accum):
            batch, n_skipped = self._next_batch(micro)
            skipped += n_skipped
            batch = apply_to_sample(lambda t: t.to(self.device, non_blocking=True), batch)
            batch.update({"epoch": it // per_epoch, "num_iters_per_epoch": per_epoch, "iters": it % per_epoch})
            no_sync = self.use_distributed and micro < accum - 1
            with model.no_sync() if no_sync else contextlib.nullcontext():
                with self.precision.autocast():
                    loss = self.task.train_step(model=model, samples=batch)
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach().float()
        totals = all_reduce_sum(torch.stack([loss_sum / accum, torch.tensor(float(skipped), device=self.device)]))
        mean_loss = totals[0].item() / get_world_size()
        skipped = int(totals[1].item())
        self.iteration += 1
        if not math.isfinite(mean_loss):
            self.optimizer.zero_grad(set_to_none=True)
            self._nonfinite(mean_loss)
            return None, skipped
        max_norm = self.config.run_cfg.get("max_grad_norm")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if max_norm:
            self.grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float(max_norm)))
        else:
            self.grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_loss, skipped

    def preemption_agreed(self) -> bool:
        """Whether any rank has received a preemption signal (one small all-reduce per step)."""
        signalled = all_reduce_sum(torch.tensor([float(self.preemption.requested)], device=self.device))
        if signalled.item() > 0:
            self.stop_signal = PreemptionWatch.name(self.preemption.received)
        return self.stop_signal is not None

    def _stop_for_preemption(self, inner_epoch_done: bool) -> None:
        """After a signalled step: every rank saves with rank 0 (unless this step was just saved), one
        line names the signal and the checkpoint, and Preempted is raised.

        At an inner epoch's last step the validation is left to the resumed run (``pending_validation``),
        so the checkpoint is written within the grace period.
        """
        self.pending_validation = inner_epoch_done
        if self.saved_iteration != self.iteration or inner_epoch_done:
            self.save_training_state(is_best=False)
        checkpoint = str(self.output_dir / "checkpoint_latest.pth")
        logger.warning("preempted by %s: stopped after iteration %d, checkpoint %s", self.stop_signal,
                       self.iteration, self.last_saved or "none (the save failed)")
        raise Preempted(self.stop_signal, checkpoint)

    def _nonfinite(self, loss: float) -> None:
        """Stop (NonFiniteLossError naming the step) or log the dropped update, per run.on_nonfinite_loss."""
        step = self.iteration
        if self.on_nonfinite == "stop":
            last = self.last_saved or "none (no checkpoint saved yet)"
            raise NonFiniteLossError(f"non-finite training loss ({loss}) at step {step}: stopping; the update was "
                                     f"not applied and no checkpoint was written; last good checkpoint: {last}")
        logger.warning("non-finite training loss (%s) at step %d: update dropped (run.on_nonfinite_loss=skip)",
                       loss, step)

    def _next_batch(self, micro: int) -> tuple[dict[str, Any], int]:
        """The next batch (micro-batch ``micro`` of this step) with at least one sample, and how many
        unreadable samples were dropped."""
        stream = self.train_loader
        if isinstance(stream, RatioTrainLoader):
            stream = stream.source(self.iteration, micro)
        skipped = 0
        for _ in range(len(stream) + 1):
            batch = next(stream)
            skipped += int(batch.pop(SKIPPED_KEY, 0))
            if batch:
                return batch, skipped
        raise RuntimeError(f"no readable training sample in a whole data epoch ({skipped} skipped)")

    # ------------------------------------------------------------------ evaluation
    def validate(self) -> bool:
        """Evaluate ``run.valid_splits``; True if the first one's agg_metrics is a new best."""
        is_best = False
        for split in self.valid_splits:
            metrics = self.eval_epoch(split_name=split, cur_epoch=f"iter{self.iteration}")
            if metrics is None:
                continue
            if "agg_metrics" not in metrics:
                raise KeyError(f"task {type(self.task).__name__} returned no agg_metrics for split '{split}'")
            best = self.best["agg_metrics"]
            if split == self.valid_splits[0] and (best is None or metrics["agg_metrics"] > best):
                is_best = True
                self.best = {"agg_metrics": metrics["agg_metrics"], "iteration": self.iteration,
                             "path": str(self.output_dir / "checkpoint_best.pth")}
            self.log_stats({**metrics, "iteration": self.iteration, "best_iteration": self.best["iteration"]},
                           split)
            self.tracker.log(metrics, self.iteration, prefix=split)
        return is_best

    @torch.no_grad()
    def eval_epoch(self, split_name: str, cur_epoch: Any, skip_reload: bool = False) -> Optional[dict]:
        """Evaluate one split; the metrics (computed on rank 0) are returned on every rank."""
        loader = self.dataloaders[split_name]
        model = self.unwrap_dist_model(self.model)
        if not skip_reload and cur_epoch == "best":
            self._reload_best_model(model)
        model.eval()
        self.task.before_evaluation(model=model, dataset=self.datasets[split_name])
        with self.precision.autocast():
            results = self.task.evaluation(model, loader, cuda_enabled=self.cuda_enabled)
        metrics = None
        if results is not None:
            metrics = self.task.after_evaluation(val_result=results, split_name=split_name, epoch=cur_epoch)
        return broadcast_object(metrics)

    def evaluate(self, cur_epoch: Any = "best", skip_reload: bool = False) -> dict[str, Any]:
        """Evaluate ``run.test_splits`` and log their metrics."""
        logs = {}
        for split in self.test_splits:
            logs[split] = self.eval_epoch(split_name=split, cur_epoch=cur_epoch, skip_reload=skip_reload)
            if logs[split] is not None:
                self.log_stats(logs[split], split)
                self.tracker.log(logs[split], self.iteration, prefix=split)
        return logs

    def _reload_best_model(self, model: torch.nn.Module) -> torch.nn.Module:
        path = self.best["path"]
        logger.info("evaluating the best checkpoint (iteration %s): %s", self.best["iteration"], path)
        load_trainable_state_dict(model, load_checkpoint(path)["model"], path)
        return model

    # ------------------------------------------------------------------ checkpoints
    def signature(self) -> dict[str, Any]:
        """What an exact resume needs unchanged (see ``lavis_evlgen.runners.resume``)."""
        return run_signature(self.config.config, get_world_size(), self.accum_grad_iters)

    def resume_point(self) -> Optional[tuple[str, dict[str, Any]]]:
        """Where training continues from: (path, state), or None to start at iteration 0.

        With ``run.auto_resume``, the job folder's newest readable checkpoint comes first (so that a
        relaunched job never goes back to an older starting point), then ``run.resume_ckpt_path``.
        Rank 0 chooses the file and every rank reads that one.
        """
        explicit = self.resume_ckpt_path
        if self.config.run_cfg.get("auto_resume", False):
            found, error = None, None
            if self.checkpoints is not None:
                try:
                    found = self.checkpoints.newest_readable(check=self._check_format)
                except RuntimeError as err:
                    error = f"run.auto_resume: {err}"
            chosen, error = broadcast_object((str(found[0]) if found else None, error))
            if error is not None:
                raise RuntimeError(error)
            if chosen is not None:
                state = found[1] if found is not None else load_checkpoint(chosen)
                logger.info("auto_resume: resuming from %s (iteration %d)%s", chosen, int(state["iteration"]),
                            f"; run.resume_ckpt_path={explicit} is not used" if explicit else "")
                return chosen, state
            logger.info("auto_resume: no checkpoint in %s, %s", self.output_dir,
                        f"starting from run.resume_ckpt_path={explicit}" if explicit else "starting at iteration 0")
        if explicit:
            return explicit, load_checkpoint(explicit)
        return None

    @staticmethod
    def _check_format(state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a runner_evlgen checkpoint (format {state.get('format')!r}, "
                             f"expected {CHECKPOINT_FORMAT!r})")

    def save_training_state(self, is_best: bool) -> None:
        """Gather every rank's RNG and data position; rank 0 writes the checkpoint.

        A failed write stops every rank with CheckpointSaveError (``run.on_save_error: stop``, default)
        or is logged and training goes on (``continue``); the previous checkpoint stays the latest.
        """
        rng = all_gather_object(capture_rng_state())
        positions = all_gather_object(self.train_loader.state_dict())
        if self.checkpoints is not None:
            state = {
                "format": CHECKPOINT_FORMAT,
                "model": trainable_state_dict(self.unwrap_dist_model(self.model)),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "lr_sched": {"name": self.config.run_cfg.lr_sched, "iteration": self.iteration,
                             "lr": self.optimizer.param_groups[0]["lr"]},
                "iteration": self.iteration,
                "data_position": positions,
                "rng": rng,
                "world_size": get_world_size(),
                "signature": self.signature(),
                "pending_validation": self.pending_validation,
                "skipped_samples": self.skipped_total,
                "best": dict(self.best),
                "config": OmegaConf.to_container(self.config.config, resolve=True),
            }
        error = None
        if self.checkpoints is not None:
            try:
                self.checkpoints.save(state, self.iteration, is_best=is_best)
            except CheckpointSaveError as err:
                error = str(err)
        error = broadcast_object(error)
        if error is None:
            self.last_saved = f"{self.output_dir / 'checkpoint_latest.pth'} (iteration {self.iteration})"
            self.saved_iteration = self.iteration
        elif self.config.run_cfg.get("on_save_error", "stop") == "stop":
            raise CheckpointSaveError(error)
        else:
            logger.warning("training goes on without the checkpoint of iteration %d (run.on_save_error=continue)",
                           self.iteration)

    def load_training_state(self, path: str, state: dict[str, Any]) -> None:
        """Continue exactly from a checkpoint written by :meth:`save_training_state` (read from ``path``)."""
        try:
            self._check_format(state)
        except ValueError as err:
            raise ValueError(f"run.resume_ckpt_path: {path} is {err}") from err
        if is_main_process():
            for line in signature_changes(state.get("signature", {}), self.signature()):
                logger.warning("%s", line)
        load_trainable_state_dict(self.unwrap_dist_model(self.model), state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best = dict(state["best"])
        self.pending_validation = bool(state.get("pending_validation", False))
        self.skipped_total = int(state.get("skipped_samples", 0))
        self.last_saved = f"{path} (iteration {self.iteration})"
        rank, world = get_rank(), get_world_size()
        if state["world_size"] == world:
            self.train_loader.load_state_dict(state["data_position"][rank])
            restore_rng_state(state["rng"][rank])
        else:
            logger.warning("checkpoint written by %d process(es), resuming on %d: the data order and random "
                           "streams continue, but not exactly as an uninterrupted run", state["world_size"], world)
            # Rank 0's sampler position; shard streams start anew (each rank continuing rank 0's would repeat it).
            self.train_loader.load_state_dict(self.train_loader.portable(state["data_position"][0]))
            seed_all(int(self.config.run_cfg.get("seed", 42)) + rank + self.iteration)
        logger.info("resumed from %s at iteration %d", path, self.iteration)


def _duration(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``: a time left, to the precision that matters."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
