"""Training-step time of the paper-size models with random weights: EVLGen, BLIP-2 stage 1, BLIP-2 stage 2.

    python -m lavis_evlgen.tools.bench_paper [--batch 32] [--steps 10] [--warmup 3] [--dtype bf16]
        [--models evlgen_opt:pretrain_opt2.7b,blip2_stage1:pretrain,blip2_stage2_opt:pretrain_opt2.7b]
        [--json FILE]

For a GPU (one command, minutes): each model is built from its shipped model-type config at full size
(EVA-ViT-g, bert-base TomeFormer or Q-Former, OPT-2.7b) with random weights on the device (no weights read,
nothing downloaded), its frozen parts in ``--dtype``, and trained for ``--warmup`` + ``--steps`` optimizer
steps on random 224-pixel images and captions of ``--caption-tokens`` LLM tokens (the byte tokenizer: OPT's
own is a weight file) under autocast to ``--dtype``, with AdamW over the trainable parameters as
``runner_evlgen`` builds it. It prints, per model, the median step time with its quartiles, samples per second,
trainable parameters, the peak device memory, and the step's work: the FLOPs of one more step counted by
``torch.utils.flop_counter`` (matrix multiplies, convolutions, attention), the rate the timed steps reached,
and that rate's share of the device's ceiling (one large multiply under the same autocast, as ``bench_step``
times it), so a slow model is told apart from a slow device. A batch that does not fit is halved until it does (the
issue's "batch 32 or the largest that fits"), and the line says so. Attention: the TomeFormer, Q-Former and
LLM use PyTorch's SDPA (flash kernels on GPUs where they apply); LAVIS's EVA-ViT-g computes attention
explicitly.

``--models evlgen_opt:tiny,blip2_stage1:tiny,blip2_stage2_opt:tiny --batch 4`` runs the same on the CPU
(tests/tools/test_bench_paper.py). Step times are the device's; compare models measured in one command.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
from lavis.common.registry import registry
from omegaconf import DictConfig

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.cli_config import model_type_config
from lavis_evlgen.common.precision import Precision
from lavis_evlgen.models.llm import DTYPES
from lavis_evlgen.tools.bench_step import Ceiling, Spread, ceiling_size, flop_counter, matmul_ceiling, now

PAPER_MODELS = ("evlgen_opt:pretrain_opt2.7b", "blip2_stage1:pretrain", "blip2_stage2_opt:pretrain_opt2.7b")
WORDS = ("a", "red", "blue", "circle", "square", "on", "the", "left", "of", "green", "small", "large")


@dataclass
class ModelTiming:
    """One model's measurement (``step`` None when even a batch of one did not fit)."""

    model: str
    batch: int
    step: Optional[Spread]
    samples_per_second: float
    trainable_params: int
    peak_memory_gib: Optional[float]
    note: str = ""
    flops_per_step: Optional[int] = None  # counted in one more step at ``batch``

    @property
    def flops_per_s(self) -> Optional[float]:
        """The counted work over the median step time (None without either)."""
        if self.step is None or not self.flops_per_step:
            return None
        return self.flops_per_step / self.step.median

    def share_of(self, ceiling: Ceiling) -> Optional[float]:
        """The timed steps' counted FLOP rate as a fraction of ``ceiling``."""
        rate = self.flops_per_s
        return None if rate is None else rate / ceiling.flops_per_s


def random_weights_config(arch: str, model_type: str, dtype: str) -> DictConfig:
    """The model type's ``model`` section with every weight source removed (random init from the shapes the
    file carries) and the frozen parts in ``dtype``."""
    cfg = model_type_config(arch, model_type).model
    cfg.vision.weights = None
    cfg.vision.precision = dtype
    for key in ("tomeformer", "qformer"):
        if key in cfg:
            cfg[key].bert = None
            if key == "qformer":
                cfg[key].tokenizer = "minilm_vocab"  # bert-base-uncased's vocabulary, shipped
    if "llm" in cfg:
        cfg.llm.path, cfg.llm.tokenizer, cfg.llm.precision = None, "byte", dtype
    for key in ("stage1_checkpoint", "pretrained", "finetuned"):
        if key in cfg:
            cfg[key] = None
    return cfg


def captions(batch: int, tokens: int, generator: torch.Generator) -> list[str]:
    """``batch`` random captions of exactly ``tokens`` bytes (so ``tokens`` byte-tokenizer tokens)."""
    out = []
    for _ in range(batch):
        text = ""
        while len(text) < tokens:
            text += WORDS[int(torch.randint(len(WORDS), (1,), generator=generator))] + " "
        out.append(text[:tokens])
    return out


def time_model(spec: str, batch: int, steps: int, warmup: int, dtype: str, device: torch.device,
               caption_tokens: int, seed: int = 0) -> ModelTiming:
    """Build ``arch:model_type`` with random weights on ``device`` and time its training steps, halving the
    batch while it does not fit in device memory."""
    arch, model_type = spec.split(":")
    cfg = random_weights_config(arch, model_type, dtype)
    torch.manual_seed(seed)
    with device:
        model = registry.get_model_class(arch).from_config(cfg)
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    size = int(cfg.vision.get("image_size", 224))
    generator = torch.Generator().manual_seed(seed)
    requested = batch
    while True:
        try:
            seconds = run_steps(model, optimizer, batch, size, steps, warmup, DTYPES[dtype], device,
                                caption_tokens, generator)
            break
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch == 1:
                return ModelTiming(spec, 0, None, 0.0, trainable, None,
                                   f"out of memory from batch {requested} down to 1")
            batch //= 2
    note = f"{requested} did not fit" if batch != requested else ""
    flops = counted_flops(model, optimizer, batch, size, DTYPES[dtype], device, caption_tokens, generator)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    spread = Spread.of(seconds)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return ModelTiming(spec, batch, spread, batch / spread.median, trainable, peak, note, flops)


def counted_flops(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: int, size: int,
                  dtype: torch.dtype, device: torch.device, caption_tokens: int, generator: torch.Generator) -> int:
    """FLOPs of one more training step (forward, backward, AdamW) as ``run_steps`` takes it."""
    with flop_counter() as counter:
        run_steps(model, optimizer, batch, size, 1, 0, dtype, device, caption_tokens, generator)
    return counter.get_total_flops()


def run_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: int, size: int, steps: int,
              warmup: int, dtype: torch.dtype, device: torch.device, caption_tokens: int,
              generator: torch.Generator) -> list[float]:
    """Seconds of each timed optimizer step (forward, backward, AdamW) on random samples."""
    seconds = []
    for i in range(warmup + steps):
        samples = {"image": torch.randn(batch, 3, size, size, generator=generator).to(device),
                   "text_input": captions(batch, caption_tokens, generator)}
        start = now(device)
        with Precision(device.type, dtype, "bench_paper").autocast():
            loss = model(samples)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            seconds.append(now(device) - start)
    return seconds


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def format_row(t: ModelTiming, ceiling: Ceiling) -> str:
    if t.step is None:
        return f"| {t.model} | - | {t.note} | - | {t.trainable_params / 1e6:.1f} M | - | - | - |"
    memory = f"{t.peak_memory_gib:.1f} GiB" if t.peak_memory_gib is not None else "-"
    batch = f"{t.batch}" + (f" ({t.note})" if t.note else "")
    work = f"{t.flops_per_step / 1e12:.3g}" if t.flops_per_step else "-"
    share = t.share_of(ceiling)
    rate = f"{t.flops_per_s / 1e12:.3g} ({100 * share:.0f}%)" if share is not None else "-"
    return (f"| {t.model} | {batch} | {t.step.median:.3f} s ({t.step.q1:.3f}-{t.step.q3:.3f}) | "
            f"{t.samples_per_second:.1f} | {t.trainable_params / 1e6:.1f} M | {memory} | {work} | {rate} |")


def main(argv: Optional[Sequence[str]] = None) -> list[ModelTiming]:
    parser = argparse.ArgumentParser(description="Time a training step of the paper-size models (random weights).")
    parser.add_argument("--models", default=",".join(PAPER_MODELS), help="comma-separated arch:model_type")
    parser.add_argument("--batch", type=int, default=32, help="samples per step (halved until it fits)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="autocast and frozen parts")
    parser.add_argument("--caption-tokens", type=int, default=20, help="LLM tokens per caption")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 0 or args.batch < 1:
        parser.error("--steps must be at least 2, --warmup at least 0 and --batch at least 1")
    specs = [s for s in args.models.split(",") if s]
    bad = [s for s in specs if s.count(":") != 1]
    if bad:
        parser.error(f"--models: expected arch:model_type, got {bad}")
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    ceiling = matmul_ceiling(device, Precision(device.type, DTYPES[args.dtype], "bench_paper"), ceiling_size(device))
    print(f"bench_paper: {describe_device(device)}; autocast {args.dtype}, random weights, "
          f"{args.caption_tokens}-token captions, {args.steps} timed steps after {args.warmup}")
    print(f"ceiling: {ceiling.describe()}")
    print("| model | batch | step: median (quartiles) | samples/s | trainable | peak memory | TFLOP a step | "
          "TFLOP/s (of the ceiling) |")
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for spec in specs:
        timing = time_model(spec, args.batch, args.steps, args.warmup, args.dtype, device, args.caption_tokens)
        print(format_row(timing, ceiling), flush=True)
        results.append(timing)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": describe_device(device), "dtype": args.dtype, "ceiling": asdict(ceiling),
                       "results": [asdict(t) for t in results]}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
