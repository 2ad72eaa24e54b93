"""Fault drill: break tiny training runs on purpose, resume each time, compare with an uninterrupted run.

    python -m lavis_evlgen.tools.fault_drill [--faults 6] [--iters 12] [--scenarios kill,kill-2proc,...]

Each scenario trains the tiny ``evlgen_opt`` (or ``evlgen_video_opt``) model on data generated under
``--workdir`` with ``run.auto_resume: true``, first once without faults (the reference), then again while
injecting ``--faults`` faults at random moments, relaunching the same command after each one until the
run completes. The moment of a fault is a random iteration's log line plus a random part of one step,
so faults land in the forward/backward pass, the optimizer step and the checkpoint writes alike.

Scenarios (``--scenarios``, default all):

* ``kill``: SIGKILL of the training process, map-style images (random crops and flips, so the RNG
  states matter).
* ``kill-2proc``: SIGKILL of both gloo processes and their ``torch.distributed.run`` launcher.
* ``preempt-2proc``: SIGTERM to the launcher, which forwards it to both processes: they must stop after
  the same step with a checkpoint of it.
* ``preempt``: SIGTERM or SIGUSR1 (alternating); the run must stop after the current step with exit
  status 4 and a checkpoint of that step (no step lost); the last fault sends SIGTERM and SIGUSR1 at once, which must
  end the process at once (status 128 + the signal handled second) and lose nothing already saved.
  Signals that land after the last step let the run finish (status 0), or, once training and its
  evaluation are logged as done, may end the exiting process.
* ``corrupt``: SIGKILL, then the latest checkpoint is truncated on disk (its numbered hard link too);
  the relaunch must fall back to the newest readable numbered checkpoint.
* ``broken``: SIGKILL with unreadable images among the training data; the skips are counted.
* ``broken-video``: the same with unreadable videos (tiny video model, generated clips).
* ``webdataset``: SIGKILL while training on a mixture of two webdataset shard sets drawn 3 : 1
  (``run.train_dataset_ratios``, two data-loader workers, corrupt images inside the shards): the
  mixture's picks and every shard stream resume exactly.

The table: faults injected (how many hit a checkpoint write, seen as a left-over temporary file),
resumes, the largest parameter difference to the reference at the end, the samples skipped as counted
by the resumed run and by the reference, and checkpoints lost: faults after which the relaunch resumed
from an earlier iteration than the last checkpoint completed before the fault (for ``corrupt``: than
the newest one the truncation left readable). The drill fails (exit status 1) unless every difference is
<= ``--tolerance``, the skip counts agree and no checkpoint is lost.

Single-process runs are forked from this process after the imports (a launch then costs about a
second instead of fifteen); two-process runs go through ``torch.distributed.run``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

import lavis_evlgen  # noqa: F401  registers the plugin before any config is read
from lavis_evlgen.runners.launch import main as launch_main
from lavis_evlgen.runners.preemption import EXIT_PREEMPTED

SCENARIOS = ("kill", "kill-2proc", "preempt", "preempt-2proc", "corrupt", "broken", "broken-video", "webdataset")
DATA = {"kill": "images", "kill-2proc": "images", "preempt": "images", "preempt-2proc": "images",
        "corrupt": "images",
        "broken": "broken-images", "broken-video": "videos", "webdataset": "shards"}
SHARD_RATIOS = {"laion115M": 3, "ccs14M": 1}
WORDS = ["a", "red", "blue", "cat", "dog", "sits", "runs", "on", "the", "grass", "mat", "small", "big"]
TRAINING = "training to iteration"
ITERATION = re.compile(r"iteration (\d+)/\d+  loss")
SAVED = re.compile(r"saved checkpoint at iteration (\d+)")
RESUMED = re.compile(r"auto_resume: resuming from \S+ \(iteration (\d+)\)")
FRESH = "auto_resume: no checkpoint in"
FINISHED = "training time"


# ---------------------------------------------------------------- data
def write_images(root: Path, n_train: int, broken: int, seed: int) -> dict:
    """Random 32x32 PNGs with two captions each (``broken`` extra files that are not images) and a
    3-image val (and test) split; the ``caption_folder`` dataset config reading them."""
    rng, pixels = random.Random(seed), np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    train, val, gt_images, gt_anns = [], [], [], []
    for k in range(n_train + broken):
        name = f"train_{k}.png"
        if k < n_train:
            Image.fromarray(pixels.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "images" / name)
        else:
            (root / "images" / name).write_bytes(b"not an image")
        train += [{"image": name, "caption": _caption(rng), "image_id": k} for _ in range(2)]
    for k in range(3):
        name, image_id = f"val_{k}.png", 1000 + k
        Image.fromarray(pixels.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "images" / name)
        val.append({"image": name, "image_id": image_id})
        gt_images.append({"id": image_id})
        gt_anns.append({"image_id": image_id, "caption": _caption(rng), "id": len(gt_anns) + 1})
    (root / "train.json").write_text(json.dumps(train))
    for split in ("val", "test"):  # caption_folder's defaults name a test split too
        (root / f"{split}.json").write_text(json.dumps(val))
        (root / f"{split}_gt.json").write_text(json.dumps({"images": gt_images, "annotations": gt_anns}))
    processor = {"name": "blip_image_train", "image_size": 32}
    return {"caption_folder": {
        "build_info": {"root": str(root), "images": {"storage": "images/"},
                       "annotations": {"train": {"storage": "train.json"},
                                       "val": {"storage": "val.json", "gt": "val_gt.json"},
                                       "test": {"storage": "test.json", "gt": "test_gt.json"}}},
        "vis_processor": {"train": processor, "eval": {"name": "blip_image_eval", "image_size": 32}},
        "text_processor": {"train": {"name": "blip_caption"}, "eval": {"name": "blip_caption"}}}}


def write_shards(root: Path, n_shards: int, per_shard: int, seed: int, builder: str = "laion115M") -> dict:
    """``n_shards`` tar shards of jpg + txt samples, the last of each shard a corrupt image; the
    ``builder`` (``laion115M`` or ``ccs14M``) dataset config reading them."""
    rng, pixels = random.Random(seed), np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for k in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray(pixels.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
                image = b"garbage" if k == per_shard - 1 else buf.getvalue()
                for suffix, data in (("jpg", image), ("txt", _caption(rng).encode())):
                    info = tarfile.TarInfo(f"{s:05d}{k:04d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return {builder: {
        "build_info": {"root": str(root), "shards": f"{{00000..{n_shards - 1:05d}}}.tar",
                       "num_samples": n_shards * per_shard, "shuffle_buffer": 6, "seed": seed},
        "vis_processor": {"train": {"name": "blip_image_train", "image_size": 32}},
        "text_processor": {"train": {"name": "blip_caption"}}}}


def write_videos(root: Path, broken: int, seed: int) -> dict:
    """Generated moving-shape clips (tiny), ``broken`` training videos overwritten with garbage; the
    ``moving_shapes_caption`` dataset config reading them."""
    from lavis_evlgen.common.paths import config_path
    from lavis_evlgen.datasets.generate.from_config import data_folder
    from lavis_evlgen.datasets.generate.moving_shapes import generate_moving_shapes

    generate = {"seed": seed, "n_train": 6, "n_val": 2, "n_test": 2, "image_size": 32, "num_frames": 4}
    defaults = OmegaConf.load(config_path("datasets/moving_shapes_caption/defaults.yaml"))
    folder = data_folder(OmegaConf.merge(defaults.datasets.moving_shapes_caption.build_info,
                                         {"root": str(root), "generate": generate}), "videos")
    generate_moving_shapes(folder, **generate)  # what the builder does on first build; then break some
    for path in sorted(folder.rglob("train/*.mp4"))[:broken]:
        path.write_bytes(b"not a video")
    processor = {"name": "alpro_video_eval", "image_size": 32, "n_frms": 2}
    return {"moving_shapes_caption": {"build_info": {"root": str(root), "generate": generate},
                                      "vis_processor": {"train": processor, "eval": processor}}}


def _caption(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))


# ---------------------------------------------------------------- runs
@dataclass
class Attempt:
    """One launch: its exit status, log, and whether a fault was injected (and hit a save)."""
    code: int
    log: str
    fault: Optional[str] = None
    during_save: bool = False
    saved_before: int = -1


@dataclass
class Outcome:
    """One scenario's figures (a row of the table)."""
    scenario: str
    faults: int = 0
    during_saves: int = 0
    resumes: int = 0
    max_difference: float = float("nan")
    skipped: int = -1
    skipped_reference: int = -1
    lost: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


class Drill:
    """Runs the scenarios under ``workdir`` (see module doc)."""

    def __init__(self, workdir: Path, faults: int, iters: int, seed: int, tolerance: float):
        self.workdir = workdir
        self.faults = faults
        self.iters = iters
        self.rng = random.Random(seed)
        self.seed = seed
        self.tolerance = tolerance
        self.datasets: dict[str, tuple[dict, int, str, dict]] = {}
        self.references: dict[tuple[str, int], Path] = {}

    # .............................................................. configs
    def data(self, kind: str) -> tuple[dict, int, str, dict]:
        """(datasets config, data-loader workers, task, model) for one kind of data, written once."""
        if kind not in self.datasets:
            root = self.workdir / "data" / kind
            model = {"arch": "evlgen_opt", "model_type": "tiny"}
            if kind == "shards":
                mixture = {**write_shards(root / "laion", 2, 4, self.seed),
                           **write_shards(root / "ccs", 2, 4, self.seed + 1, builder="ccs14M")}
                self.datasets[kind] = mixture, 2, "evlgen_captioning", model
            elif kind == "videos":
                self.datasets[kind] = (write_videos(root, 2, self.seed), 0, "evlgen_captioning",
                                       {"arch": "evlgen_video_opt", "model_type": "tiny"})
            else:
                broken = 2 if kind == "broken-images" else 0
                self.datasets[kind] = write_images(root, 4, broken, self.seed), 0, "evlgen_captioning", model
        return self.datasets[kind]

    def experiment(self, name: str, job: str, root: Path) -> Path:
        """The experiment YAML of scenario ``name`` for the job folder ``root/out/job``."""
        datasets, workers, task, model = self.data(DATA[name])
        run = {"task": task, "runner": "runner_evlgen", "lr_sched": "linear_warmup_cosine_iter_lr",
               "init_lr": 1e-3, "min_lr": 1e-4, "warmup_lr": 1e-5, "warmup_steps": 2, "weight_decay": 0.05,
               "max_iters": self.iters, "iters_per_inner_epoch": 4, "save_every_iters": 1, "keep_last_k": 3,
               "batch_size_train": 2, "batch_size_eval": 3, "num_workers": workers, "seed": 42,
               "num_beams": 1, "max_len": 4, "min_len": 1, "train_splits": ["train"], "valid_splits": [],
               "test_splits": [], "output_dir": str(root / "out"), "job_id": job, "device": "cpu",
               "log_freq": 1, "auto_resume": True}
        if DATA[name] == "shards":
            run["train_dataset_ratios"] = dict(SHARD_RATIOS)
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{job}.yaml"
        path.write_text(yaml.safe_dump({"model": model, "datasets": datasets, "run": run}))
        return path

    # .............................................................. launching
    def launch(self, cfg: Path, nproc: int, log: Path) -> Any:
        """Start one training launch writing its output to ``log``; returns a handle for :meth:`poll`."""
        log.write_text("")
        if nproc == 1:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                    os.setsid()
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    torch.set_num_threads(1)
                    os.chdir(cfg.parent)
                    code = launch_main(["--cfg-path", str(cfg)], evaluate_only=False)
                except BaseException:  # noqa: B036  the forked child must never return into the drill
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            return pid
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(_free_port()), "-m", "lavis_evlgen.tools.fault_drill", "train",
               "--cfg-path", str(cfg)]
        return subprocess.Popen(cmd, cwd=cfg.parent, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))

    @staticmethod
    def poll(handle: Any) -> Optional[int]:
        """Exit status if the launch ended, else None."""
        if isinstance(handle, int):
            pid, status = os.waitpid(handle, os.WNOHANG)
            return None if pid == 0 else os.waitstatus_to_exitcode(status)
        return handle.poll()

    @staticmethod
    def signal_launch(handle: Any, sig: int) -> None:
        """``sig`` to the process, or to the launcher (torch.distributed.run forwards it to its workers);
        SIGKILL to every process of the launch at once, as a dying node takes them all."""
        pid = handle if isinstance(handle, int) else handle.pid
        targets = [pid] + (descendants(pid) if sig == signal.SIGKILL else [])
        for target in targets:
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass

    def run_once(self, cfg: Path, nproc: int, log: Path, fault: Optional[tuple[int, list[int]]] = None,
                 timeout: float = 600) -> Attempt:
        """One launch; with ``fault = (iteration, signals)`` the signals are sent after a random part of
        the step that follows that iteration's log line."""
        handle = self.launch(cfg, nproc, log)
        start, sent = time.time(), None
        step = 0.05
        while True:
            code = self.poll(handle)
            if code is not None:
                break
            if time.time() - start > timeout:
                self.signal_launch(handle, signal.SIGKILL)
                raise TimeoutError(f"launch of {cfg} did not finish in {timeout} s; log: {log}")
            if fault is not None and sent is None:
                seen = [int(m) for m in ITERATION.findall(log.read_text(errors="replace"))]
                if seen and seen[-1] >= fault[0]:
                    time.sleep(self.rng.uniform(0, step))
                    folder = self.job_folder(cfg)
                    saved_before = max([int(m) for m in SAVED.findall(log.read_text(errors="replace"))],
                                       default=-1)
                    for sig in fault[1]:
                        self.signal_launch(handle, sig)
                    sent = (folder, saved_before)
            time.sleep(0.003)
        text = log.read_text(errors="replace")
        if sent is None:
            return Attempt(code, text)
        folder, saved_before = sent
        during_save = any(p.name.startswith(".tmp-") for p in folder.iterdir())
        names = "+".join(signal.Signals(s).name for s in fault[1])
        return Attempt(code, text, fault=names, during_save=during_save, saved_before=saved_before)

    @staticmethod
    def job_folder(cfg: Path) -> Path:
        run = yaml.safe_load(cfg.read_text())["run"]
        return Path(run["output_dir"]) / run["job_id"]

    # .............................................................. scenarios
    def scenario(self, name: str) -> Outcome:
        """Reference run, then the faulty run; compare (see module doc)."""
        outcome = Outcome(name)
        nproc = 2 if name.endswith("-2proc") else 1
        shutil.rmtree(self.workdir / name / "out", ignore_errors=True)
        logs = self.workdir / name / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        reference = self.reference(name, nproc)
        if reference is None:
            outcome.problems.append(f"reference run failed: see {self.workdir / 'references'}")
            return outcome
        cfg = self.experiment(name, "drill", self.workdir / name)
        folder = self.job_folder(cfg)
        resumed_at, previous = 0, Attempt(0, "")
        for k in range(self.faults + 1):
            fault = None
            if k < self.faults and resumed_at < self.iters - 1:
                # corrupt: at least two checkpoints of this attempt exist, so one survives the truncation
                low = min(resumed_at + (3 if name == "corrupt" else 1), self.iters - 1)
                span = max((self.iters - 1 - low) // (self.faults - k), 0)
                fault = (self.rng.randint(low, low + span), self.signals(name, k))
            attempt = self.run_once(cfg, nproc, logs / f"attempt{k}.log", fault)
            if k > 0:
                found = RESUMED.findall(attempt.log) or (["0"] if FRESH in attempt.log else [])
                if not found:
                    outcome.problems.append(f"attempt {k} did not resume: see {logs / f'attempt{k}.log'}")
                    return outcome
                outcome.resumes += 1
                self.check_resume(outcome, previous, int(found[0]), name)
                resumed_at = int(found[0])
            if attempt.fault is None:
                if attempt.code != 0:
                    outcome.problems.append(f"attempt {k} failed ({attempt.code}): see {logs / f'attempt{k}.log'}")
                break
            outcome.faults += 1
            outcome.during_saves += attempt.during_save
            self.check_exit(outcome, attempt, k, logs)
            if name == "corrupt":
                attempt.saved_before = self.corrupt_latest(folder)
            previous = attempt
        final, ref = (torch.load(path, map_location="cpu", weights_only=False)
                      for path in (self.job_folder(cfg) / f"checkpoint_{self.iters}.pth", reference))
        outcome.max_difference = max((final["model"][key].double() - ref["model"][key].double()).abs().max().item()
                                     for key in ref["model"])
        outcome.skipped, outcome.skipped_reference = final["skipped_samples"], ref["skipped_samples"]
        if not outcome.max_difference <= self.tolerance:
            outcome.problems.append(f"parameters differ by {outcome.max_difference:.3g} > {self.tolerance}")
        if outcome.skipped != outcome.skipped_reference:
            outcome.problems.append(f"skipped samples {outcome.skipped} != reference {outcome.skipped_reference}")
        if name.startswith("broken") or name == "webdataset":
            if outcome.skipped_reference <= 0:
                outcome.problems.append("no unreadable sample was met: the scenario tests nothing")
        if outcome.lost:
            outcome.problems.append(f"{outcome.lost} checkpoint(s) lost")
        return outcome

    @staticmethod
    def corrupt_latest(folder: Path) -> int:
        """Truncate ``checkpoint_latest.pth`` in place (its numbered name shares the file); return the
        iteration of the newest checkpoint still readable, which the relaunch must resume from."""
        latest = folder / "checkpoint_latest.pth"
        if latest.exists():
            with open(latest, "r+b") as f:
                f.truncate(max(latest.stat().st_size // 3, 1))
        readable = []
        for path in folder.glob("checkpoint_*.pth"):
            try:
                readable.append(int(torch.load(path, map_location="cpu", weights_only=False)["iteration"]))
            except Exception:  # noqa: BLE001  any failure to load counts as unreadable
                continue
        return max(readable, default=0)

    def reference(self, name: str, nproc: int) -> Optional[Path]:
        """The final checkpoint of an uninterrupted run on the scenario's data (one run per data and
        process count), None if that run failed."""
        key = (DATA[name], nproc)
        if key not in self.references:
            root = self.workdir / "references" / f"{key[0]}-{nproc}proc"
            shutil.rmtree(root / "out", ignore_errors=True)
            cfg = self.experiment(name, "reference", root)
            if self.run_once(cfg, nproc, root / "reference.log").code != 0:
                return None
            self.references[key] = self.job_folder(cfg) / f"checkpoint_{self.iters}.pth"
        return self.references[key]

    def signals(self, name: str, k: int) -> list[int]:
        """The fault of attempt ``k``: SIGKILL, for ``preempt`` SIGTERM/SIGUSR1 (both on the last), for
        ``preempt-2proc`` SIGTERM to the launcher."""
        if name == "preempt-2proc":
            return [signal.SIGTERM]
        if name != "preempt":
            return [signal.SIGKILL]
        if k == self.faults - 1:
            return [signal.SIGTERM, signal.SIGUSR1]  # distinct numbers: both are delivered
        return [(signal.SIGTERM, signal.SIGUSR1)[k % 2]]

    def check_exit(self, outcome: Outcome, attempt: Attempt, k: int, logs: Path) -> None:
        """Preemption: status 4 and the log line for one signal, 128 + signal for two. Under
        torch.distributed.run the launcher's own status replaces the workers': only the line counts."""
        if not outcome.scenario.startswith("preempt"):
            return
        sigs = attempt.fault.split("+")
        if attempt.code == 0:
            return  # the signals came after the last step: the run had finished
        if FINISHED in attempt.log and attempt.code in {-signal.Signals[s].value for s in sigs}:
            return  # the signals came after training and its evaluation, while the process was exiting
        if outcome.scenario == "preempt-2proc":
            if "preempted by SIGTERM" not in attempt.log:
                outcome.problems.append(f"attempt {k}: no 'preempted by SIGTERM' log line (status {attempt.code})")
            return
        # Python runs the handlers of two pending signals in numeric order: either one can be the second.
        expected = {EXIT_PREEMPTED} if len(sigs) == 1 else {128 + signal.Signals[s].value for s in sigs}
        if attempt.code not in expected:
            outcome.problems.append(f"attempt {k}: exit status {attempt.code} after {attempt.fault}, expected "
                                    f"{expected}: see {logs / f'attempt{k}.log'}")
        if len(sigs) == 1 and f"preempted by {sigs[0]}" not in attempt.log:
            outcome.problems.append(f"attempt {k}: no 'preempted by {sigs[0]}' log line")

    @staticmethod
    def check_resume(outcome: Outcome, previous: Attempt, resumed: int, name: str) -> None:
        """Count a lost checkpoint when the relaunch went back further than the fault allows."""
        saved = [int(m) for m in SAVED.findall(previous.log)]
        if name.startswith("preempt") and previous.fault and "+" not in previous.fault:
            floor = max(saved, default=0)  # the preemption checkpoint itself
        else:
            floor = max(previous.saved_before, 0)
        if resumed < floor:
            outcome.lost += 1

    def run(self, names: list[str]) -> list[Outcome]:
        return [self.scenario(name) for name in names]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo += parents.get(child, [])
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(outcomes: list[Outcome]) -> str:
    """The drill's results as a markdown table."""
    rows = ["| scenario | faults injected (in a save) | resumes | final max param diff | samples skipped, "
            "counted (reference) | checkpoints lost | result |",
            "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        rows.append(f"| {o.scenario} | {o.faults} ({o.during_saves}) | {o.resumes} | {o.max_difference:.2e} | "
                    f"{o.skipped} ({o.skipped_reference}) | {o.lost} | "
                    f"{'pass' if o.passed else 'FAIL: ' + '; '.join(o.problems)} |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["train"]:
        return launch_main(args_in[1:], evaluate_only=False)
    parser = argparse.ArgumentParser(description="Inject faults into tiny training runs and check exact resume.")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from {', '.join(SCENARIOS)}")
    parser.add_argument("--faults", type=int, default=6, help="faults per scenario")
    parser.add_argument("--iters", type=int, default=12, help="training iterations per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the fault moments")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="largest final parameter difference allowed")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for data and runs (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(args_in)
    names = [n for n in args.scenarios.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"--scenarios: unknown {unknown}; choose from {list(SCENARIOS)}")
    if args.faults < 1 or args.iters < 3:
        parser.error("--faults must be >= 1 and --iters >= 3")
    workdir = args.workdir or Path(tempfile_dir())
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    started = time.time()
    outcomes = Drill(workdir, args.faults, args.iters, args.seed, args.tolerance).run(names)
    print(table(outcomes))
    print(f"\n{len(names)} scenario(s), {sum(o.faults for o in outcomes)} faults, {time.time() - started:.0f} s; "
          f"work folder {workdir}{'' if args.keep or args.workdir else ' (removed)'}")
    (workdir / "drill.json").write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(o.passed for o in outcomes) else 1


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="fault_drill-")


if __name__ == "__main__":
    sys.exit(main())
