"""Training-step time of a training config, with a per-part breakdown, to size runs and re-measure the README.

    python -m lavis_evlgen.tools.bench_step --cfg-path projects/evlgen/train/quickstart.yaml \
        [--steps 20] [--warmup 3] [--threads N] [--attention MODES] [--options key=value ...]

It builds the task, datasets, model and runner of the config (the runner's output goes to a temporary
folder), then:

1. times ``--steps`` optimizer steps of ``runner.train_step``, the code training runs (next batch,
   autocast, forward, backward, gradient clipping, optimizer), after ``--warmup`` untimed ones, and
   prints the median, the quartiles and the extremes;
2. times the same number of single micro-batch steps split into parts by hooks that only read the
   clock: ViT, connector forward (ln_vision, f_proj1, TomeFormer, f_proj2 and the prompt assembly),
   LLM forward (the frozen LLM and the loss), LLM backward (down to the gradient of the LLM's input
   embeddings), connector backward, optimizer (clipping and step). With ``run.feature_cache`` the
   breakdown runs on the same records from images and from their cached ViT features, alternately,
   so the cache's gain is a ratio measured in one process;
3. counts the FLOPs of each part in one more step (``torch.utils.flop_counter``: matrix multiplies,
   convolutions, attention), prints the rate each part reached, and times one large matrix multiply under
   the run's precision as the machine's ceiling, so it says how far the step is from what the hardware
   allows for that work (the floor no setting can beat without doing less).

``--attention bf16,bf16_flash,fp32`` (CPU bf16 autocast only) first times the runner's step in each of those
``run.cpu_bf16_attention`` modes, taking turns step by step in one process, and prints each mode's spread and
its ratio to the first, so a noisy machine slows every mode alike.

Models without a frozen LLM (BLIP-2 stage 1) show the whole forward and backward as connector time.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import torch
from lavis.common.config import Config
from lavis.common.registry import registry
from lavis.datasets.data_utils import apply_to_sample
from lavis.tasks import setup_task
from torch import nn

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.checkpoint import seed_all
from lavis_evlgen.common.cli_config import add_config_arguments, lavis_config
from lavis_evlgen.common.config_check import DEFAULT_RUNNER
from lavis_evlgen.common.distributed import init_distributed
from lavis_evlgen.common.precision import CPU_BF16_ATTENTION, Precision
from lavis_evlgen.datasets.datasets.caption import SKIPPED_KEY
from lavis_evlgen.runners.runner_evlgen import close_log_file

if TYPE_CHECKING:
    from torch.utils.flop_counter import FlopCounterMode

PARTS = ("ViT", "connector forward", "LLM forward", "LLM backward", "connector backward", "optimizer")
@dataclass
class Spread:
    """Median, quartiles and extremes of a list of durations in seconds."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Spread":
        if len(seconds) < 2:
            raise ValueError("--steps: at least 2 timed steps are needed for a spread")
        q1, _, q3 = statistics.quantiles(seconds, n=4, method="inclusive")
        return cls(statistics.median(seconds), q1, q3, min(seconds), max(seconds), len(seconds))

    def describe(self) -> str:
        return (f"median {self.median:.3f} s (quartiles {self.q1:.3f}-{self.q3:.3f}, "
                f"range {self.low:.3f}-{self.high:.3f}, {self.count} steps)")


@dataclass
class BenchResult:
    """What ``main`` measured: the runner's step, and the parts' medians per input source."""

    step: Spread
    batch_size: int
    parts: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> part -> median seconds
    totals: dict[str, Spread] = field(default_factory=dict)  # source -> spread of the parts' sum
    flops: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> part -> counted FLOPs
    ceiling: Optional["Ceiling"] = None


@dataclass
class Ceiling:
    """The machine's rate on one large matrix multiply under the run's precision: what counted work could reach."""

    flops_per_s: float
    size: int
    dtype: str

    def describe(self) -> str:
        return (f"{self.flops_per_s / 1e9:.0f} GFLOP/s, one {self.dtype} [{self.size}, {self.size}] @ "
                f"[{self.size}, {self.size}] multiply under the run's precision (median of 10)")


def now(device: torch.device) -> float:
    """The clock, after the device's queued work (GPUs run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def ceiling_size(device: torch.device) -> int:
    """The ceiling's matrix side: large enough to keep the device's multiply units busy, quick to time."""
    return 8192 if device.type == "cuda" else 2048


def matmul_ceiling(device: torch.device, precision: Precision, size: int, repeats: int = 10) -> Ceiling:
    """Median rate of ``[size, size] @ [size, size]`` under ``precision``'s autocast (the dtype the model's
    multiplies get), after two untimed ones."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    seconds = []
    with precision.autocast():
        for i in range(repeats + 2):
            start = now(device)
            out = a @ b
            if i >= 2:
                seconds.append(now(device) - start)
    return Ceiling(2 * size ** 3 / statistics.median(seconds), size, str(out.dtype).replace("torch.", ""))


class PartClock:
    """Forward timestamps from module hooks and the backward split from a gradient hook.

    The hooks only read the clock (after a device synchronisation on GPUs), so the step computes
    exactly what training computes. While ``counter`` is set, every mark also reads its running FLOP total,
    so the same split gives each part's work.
    """

    def __init__(self, model: nn.Module, device: torch.device):
        self.device = device
        self.marks: dict[str, float] = {}
        self.flop_marks: dict[str, int] = {}
        self.counter: Optional[FlopCounterMode] = None
        self.handles = []
        vit = getattr(model, "visual_encoder", None)
        if isinstance(vit, nn.Module):
            self.handles.append(vit.register_forward_pre_hook(lambda *_: self.mark("vit_start")))
            self.handles.append(vit.register_forward_hook(lambda *_: self.mark("vit_end")))
        self.llm = frozen_llm(model)
        if self.llm is not None:
            self.handles.append(self.llm.base_model.register_forward_pre_hook(self._llm_inputs, with_kwargs=True))

    def mark(self, name: str) -> None:
        self.marks[name] = now(self.device)
        if self.counter is not None:
            self.flop_marks[name] = self.counter.get_total_flops()

    def clear(self) -> None:
        self.marks.clear()
        self.flop_marks.clear()

    def _llm_inputs(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.mark("llm_start")
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.requires_grad:
            embeds.register_hook(self._llm_input_grad)

    def _llm_input_grad(self, grad: torch.Tensor) -> None:
        self.mark("llm_backward_end")

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def parts(self) -> dict[str, float]:
        """Durations of PARTS from the marks of one step."""
        return split_parts(self.marks)

    def flops(self) -> dict[str, int]:
        """Counted FLOPs of PARTS from the marks of one step taken with ``counter`` set."""
        return split_parts(self.flop_marks)


def split_parts(m: dict[str, float]) -> dict[str, float]:
    """PARTS from running totals (clock or FLOPs) read at the step's marks: start, vit_start/vit_end (with a
    ViT), llm_start, forward_end, llm_backward_end, backward_end, step_end."""
    vit = m["vit_end"] - m["vit_start"] if "vit_start" in m else 0
    llm_start = m.get("llm_start", m["forward_end"])
    llm_backward_end = m.get("llm_backward_end", m["forward_end"])
    return {"ViT": vit,
            "connector forward": llm_start - m["start"] - vit,
            "LLM forward": m["forward_end"] - llm_start,
            "LLM backward": llm_backward_end - m["forward_end"],
            "connector backward": m["backward_end"] - llm_backward_end,
            "optimizer": m["step_end"] - m["backward_end"]}


def frozen_llm(model: nn.Module) -> Optional[nn.Module]:
    """The model's frozen language model (``llm`` of every model with a visual prompt; None for BLIP-2 stage 1)."""
    llm = getattr(model, "llm", None)
    return llm if isinstance(llm, nn.Module) else None


def run_step(runner, model: nn.Module, batch: dict[str, Any], clock: PartClock) -> None:
    """One micro-batch step as ``runner.train_step`` computes it, with the clock's marks between its parts."""
    clock.clear()
    clock.mark("start")
    with runner.precision.autocast():
        loss = runner.task.train_step(model=model, samples=batch)
    clock.mark("forward_end")
    (runner.scaler.scale(loss) if runner.scaler is not None else loss).backward()
    clock.mark("backward_end")
    max_norm = runner.config.run_cfg.get("max_grad_norm")
    optimizer = runner.optimizer
    if max_norm:
        if runner.scaler is not None:
            runner.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], float(max_norm))
    if runner.scaler is not None:
        runner.scaler.step(optimizer)
        runner.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    clock.mark("step_end")


def timed_step(runner, model: nn.Module, batch: dict[str, Any], clock: PartClock) -> dict[str, float]:
    """One micro-batch step split into PARTS, in seconds."""
    run_step(runner, model, batch, clock)
    return clock.parts()


def flop_counter() -> "FlopCounterMode":
    """torch's FLOP counter with CPU attention added, imported here: importing it on a CUDA build without triton
    logs a warning that concerns GPU kernels only."""
    logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)


def _cpu_flash_attention(query, key, value, *args, out_val=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _cpu_flash_attention_backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the GPU attention kernels; PyTorch's CPU SDPA runs these, with the same arithmetic.
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention,
                       torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
                           _cpu_flash_attention_backward}


def counted_step(runner, model: nn.Module, batch: dict[str, Any], clock: PartClock) -> dict[str, int]:
    """One micro-batch step split into PARTS, in FLOPs of matrix multiplies, convolutions and attention
    (``torch.utils.flop_counter``, with CPU attention added; element-wise work is not counted)."""
    with flop_counter() as counter:
        clock.counter = counter
        try:
            run_step(runner, model, batch, clock)
        finally:
            clock.counter = None
    return clock.flops()


def image_batches(runner, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` training batches of images (before any feature cache), drawn with a fixed seed."""
    (split,) = runner.train_splits
    datasets = [splits[split] for splits in runner.datasets.values() if split in splits]
    if not datasets:
        raise ValueError(f"run.train_splits: no dataset has a '{split}' split")
    dataset = datasets[0]
    size = int(runner.config.run_cfg.batch_size_train)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = []
    for b in range(count):
        rows = [order[(b * size + i) % len(order)] for i in range(size)]
        batch = dataset.collater([dataset[i] for i in rows])
        batch.pop(SKIPPED_KEY, None)
        batches.append(apply_to_sample(lambda t: t.to(runner.device), batch))
    return batches


def with_features(model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with ``image`` replaced by the frozen ViT's outputs, as the feature cache stores them."""
    out = {k: v for k, v in batch.items() if k != "image"}
    out["image_features"] = model.vision_features(batch["image"])
    return out


@contextmanager
def temporary_runner(cfg: Config) -> Iterator[Any]:
    """Task, datasets, model and the config's runner, writing into a temporary output folder."""
    with tempfile.TemporaryDirectory(prefix="bench_step_") as out:
        run_cfg = cfg.run_cfg
        run_cfg.output_dir = out
        init_distributed(run_cfg)
        seed_all(int(run_cfg.get("seed", 42)))
        task = setup_task(cfg)
        datasets = task.build_datasets(cfg)
        model = task.build_model(cfg)
        runner = registry.get_runner_class(run_cfg.get("runner", DEFAULT_RUNNER))(
            cfg=cfg, job_id="bench_step", task=task, model=model, datasets=datasets)
        try:
            yield runner
        finally:
            close_log_file()  # its run.log is in the folder removed here


def sources(runner, model: nn.Module) -> list[str]:
    """Input sources the breakdown compares: images, and cached features where the config caches them."""
    has_vit = isinstance(getattr(model, "visual_encoder", None), nn.Module)
    if not has_vit:
        return ["features"]
    return ["images", "features"] if runner.config.run_cfg.get("feature_cache", False) else ["images"]


def main(argv: Optional[Sequence[str]] = None) -> BenchResult:
    parser = argparse.ArgumentParser(description="Time a training config's step, with a per-part breakdown.")
    add_config_arguments(parser)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (each measurement)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--attention", default=None,
                        help="comma-separated run.cpu_bf16_attention modes to time in turns (CPU bf16 only)")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 0:
        parser.error("--steps must be at least 2 and --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    cfg = lavis_config(args.cfg_path, args.options)
    with temporary_runner(cfg) as runner:
        model = runner.unwrap_dist_model(runner.model)
        use = sources(runner, model)
        raw = image_batches(runner, min(args.steps, 4), int(cfg.run_cfg.get("seed", 42))) if "images" in use else []
        _ = runner.optimizer, runner.lr_scheduler, runner.train_loader  # build the cache before timing
        model.train()
        batch_size = int(cfg.run_cfg.batch_size_train) * runner.accum_grad_iters
        print(f"bench_step: {args.cfg_path}  ({cfg.model_cfg.arch} {cfg.model_cfg.get('model_type', '')}, "
              f"batch {batch_size}, {runner.device}, {torch.get_num_threads()} threads)")
        print(f"  {runner.precision.describe()}")
        if args.attention:
            compare_attention(runner, args.attention.split(","), args.steps, args.warmup)
        for _ in range(args.warmup):
            runner.train_step()
        seconds = []
        for _ in range(args.steps):
            start = time.perf_counter()
            runner.train_step()
            if runner.device.type == "cuda":
                torch.cuda.synchronize(runner.device)
            seconds.append(time.perf_counter() - start)
        result = BenchResult(step=Spread.of(seconds), batch_size=batch_size)
        source = "cached features" if cfg.run_cfg.get("feature_cache", False) else "the config's data"
        print(f"  training step (runner.train_step, {source}): {result.step.describe()}, "
              f"{batch_size / result.step.median:.1f} samples/s")

        if "images" in use:
            batches = {"images": raw}
            if "features" in use:
                batches["features"] = [with_features(model, b) for b in raw]
        else:
            batches = {"features": [apply_to_sample(lambda t: t.to(runner.device), _strip(next(runner.train_loader)))
                                    for _ in range(min(args.steps, 4))]}
        clock = PartClock(model, runner.device)
        try:
            for name, group in batches.items():  # warm-up of each source
                timed_step(runner, model, group[0], clock)
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in batches}
            for i in range(args.steps):
                for name, group in batches.items():
                    samples[name].append(timed_step(runner, model, group[i % len(group)], clock))
            for name, group in batches.items():
                result.flops[name] = counted_step(runner, model, group[0], clock)
        finally:
            clock.remove()
        for name, rows in samples.items():
            result.parts[name] = {part: statistics.median(r[part] for r in rows) for part in PARTS}
            result.totals[name] = Spread.of([sum(r.values()) for r in rows])
        result.ceiling = matmul_ceiling(runner.device, runner.precision, ceiling_size(runner.device))
        print_breakdown(result)
        print_work(result)
    return result


def compare_attention(runner, modes: Sequence[str], steps: int, warmup: int) -> dict[str, Spread]:
    """The runner's step in each ``run.cpu_bf16_attention`` mode, the modes taking turns step by step."""
    if runner.precision.attention_mode is None:
        raise ValueError(f"--attention: compares modes of CPU bf16 autocast, but this run has "
                         f"'{runner.precision.describe()}'")
    unknown = [m for m in modes if m not in CPU_BF16_ATTENTION]
    if unknown:
        raise ValueError(f"--attention: unknown modes {unknown}; expected some of {list(CPU_BF16_ATTENTION)}")
    original = runner.precision
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for i in range(warmup + steps):
            for mode in modes:
                runner.precision = dataclasses.replace(original, cpu_bf16_attention=mode)
                start = time.perf_counter()
                runner.train_step()
                if i >= warmup:
                    seconds[mode].append(time.perf_counter() - start)
    finally:
        runner.precision = original
    spreads = {m: Spread.of(s) for m, s in seconds.items()}
    first = spreads[modes[0]].median
    for mode, spread in spreads.items():
        print(f"  run.cpu_bf16_attention={mode}: {spread.describe()}, {spread.median / first:.2f}x {modes[0]}")
    return spreads


def _strip(batch: dict[str, Any]) -> dict[str, Any]:
    batch.pop(SKIPPED_KEY, None)
    return batch


def print_breakdown(result: BenchResult) -> None:
    names = list(result.parts)
    print(f"\n  per part, one micro-batch of {result.batch_size} (median s over the same batches, "
          f"sources interleaved):")
    print("  " + f"{'part':20}" + "".join(f"{'from ' + n:>16}{'share':>7}" for n in names))
    for part in PARTS:
        cells = ""
        for n in names:
            value, total = result.parts[n][part], result.totals[n].median
            cells += f"{value:16.3f}{100 * value / total:6.0f}%"
        print(f"  {part:20}{cells}")
    print("  " + f"{'step (sum of parts)':20}" + "".join(f"{result.totals[n].median:16.3f}{'':7}" for n in names))
    for n in names:
        print(f"  from {n}: {result.totals[n].describe()}")
    if {"images", "features"} <= set(names):
        ratio = result.totals["images"].median / result.totals["features"].median
        print(f"  a step from images takes {ratio:.2f}x a step from cached features")


def print_work(result: BenchResult) -> None:
    """Counted FLOPs per part, the rate each part reached, and how far the step is from the machine's ceiling."""
    names = list(result.flops)
    print("\n  work per part, one micro-batch, and the rate at the part's median time (GFLOP of matrix multiplies,\n"
          "  convolutions and attention, counted by torch.utils.flop_counter; element-wise work is not counted):")
    print("  " + f"{'part':20}" + "".join(f"{'GFLOP, ' + n:>18}{'GFLOP/s':>9}" for n in names))
    for part in PARTS:
        cells = ""
        for n in names:
            work, seconds = result.flops[n][part] / 1e9, result.parts[n][part]
            rate = f"{work / seconds:9.0f}" if work and seconds > 0 else f"{'-':>9}"
            cells += f"{work:18.3g}{rate}"
        print(f"  {part:20}{cells}")
    c = result.ceiling
    print(f"  ceiling: {c.describe()}")
    for n in names:
        work, seconds = sum(result.flops[n].values()), result.totals[n].median
        floor = work / c.flops_per_s
        print(f"  from {n}: {work / 1e9:.1f} GFLOP in {seconds:.3f} s, {work / seconds / 1e9:.0f} GFLOP/s "
              f"({100 * work / seconds / c.flops_per_s:.0f}% of the ceiling); at the ceiling the counted work takes "
              f"{floor:.3f} s, {floor / seconds:.2f}x the step")


if __name__ == "__main__":
    main()
    sys.exit(0)
