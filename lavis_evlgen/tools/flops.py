"""Multiply-accumulates (MACs) of the vision-to-language connector per training sample, for each stage.

    python -m lavis_evlgen.tools.flops --cfg-path <experiment or model config> [--json] [--batch 2]

The paper's Table 6 method: only the connector is counted, since the frozen ViT and LLM are the same
for EVLGen and BLIP-2. A config names one model (``model:``), or several (``methods.<name>.model``, as
the comparison configs do, or ``methods.<name>.stages.<stage>.model``); each is counted as one stage.

The tool asks each model class what to count: ``STAGE`` (its display name), ``LOSSES`` (its training
losses), ``CONNECTOR`` (the dotted path of the module whose calls are recorded as passes) and ``MIN_BATCH``
(the smallest batch its losses work on). A model whose only loss is ``caption`` is counted on one
``encode_image`` (the frozen LLM that computes that loss is not the connector); any other is counted on
its whole training forward, since all its losses run through the connector:

* EVLGen: one pass of ``ln_vision -> f_proj1 -> TomeFormer -> f_proj2`` (``encode_image``).
* BLIP-2 stage 1: LAVIS's whole ``Blip2Qformer.forward`` (ITC + ITM + ITG), which runs the Q-Former
  four times per step: queries over the image (ITC), the caption alone (ITC), queries + caption over
  the image on three times the batch (ITM: positives, a negative image per caption, a negative caption
  per image) and the caption decoder on the cached query states (ITG); plus the projections, the ITC
  similarities, the ITM head and the LM head over the 30k-word vocabulary.
* BLIP-2 stage 2: one pass of ``ln_vision -> Q-Former (queries over the image) -> projection``.

How it counts. The model is built at its configured size from shapes alone (no weights read): the
ViT is replaced by precomputed tokens of its output shape (found by a meta-device forward), BERT and
LLM shapes come from the checkpoints' ``config.json`` (or the ``config`` sections), and the LLM is a
zero-layer stand-in of the same width (only its width reaches the connector). The connector is then
run on random tokens under ``torch.utils.flop_counter.FlopCounterMode``, and MACs = FLOPs / 2 of every
matrix product it executes:

* linear layers: tokens x d_in x d_out (biases not counted);
* attention: Q.K^T and softmax(.).V, tokens_q x tokens_k x width each; scaled_dot_product_attention is
  forced to its math path so that both products are seen (the fused CPU kernel is not counted by torch);
* ToMe merging: its key similarity, ceil(T/2) x floor(T/2) x head_dim per layer, is a matrix product
  and is counted; the merge itself (sort, gather, scatter-mean) is not a matrix product and adds
  nothing. Merging is seen through the token counts: each layer's attention and FFN run on the tokens
  left after the previous layers' merges (``tokens_per_layer``, as the connector reports them: with
  threshold merging, the widest item of the batch, which is what the batched products run on);
* not counted: LayerNorm, softmax, GELU, residual and bias additions, dropout, losses.

Counts are forward passes per training sample (backward costs about twice as much again). The batch
(``--batch``, at least the model's ``MIN_BATCH``: 2 for stage 1) matters only for stage 1's ITC
similarity products, which grow with it (32 x 256 MACs per image-caption pair); BLIP-2 pads captions
to ``max_txt_len``, so its counts do not depend on the caption text. With a ``run`` section, the
whole schedule's connector MACs are
``per sample x global batch x run.max_iters``, the global batch being ``run.global_batch_size``, else
``run.batch_size_train x run.world_size x run.accum_grad_iters``.
"""
from __future__ import annotations

import argparse
import copy
import json
import operator
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
from accelerate import init_empty_weights
from lavis.common.registry import registry
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import lavis_evlgen  # noqa: F401  registers the models
from lavis_evlgen.common.cli_config import add_config_arguments, load_config, model_section
from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.models.blip2.parts import MINILM_VOCAB
from lavis_evlgen.models.vision import build_vision_encoder

BYTE_VOCAB = {"vocab_size": 259, "pad_token_id": 256, "bos_token_id": 257, "eos_token_id": 258}


@dataclass
class ConnectorPass:
    """One call of the connector's core module (TomeFormer or Q-Former encoder) in a training step."""

    name: str
    batch: int
    macs: int


@dataclass
class StageMacs:
    """Connector MACs of one training stage, per sample, and how the connector is run per step."""

    stage: str
    model: str
    vision_tokens: int
    vision_width: int
    connector_tokens: int
    macs_per_sample: int
    calls_per_step: int
    sample_passes_per_sample: float
    passes: list[dict[str, Any]] = field(default_factory=list)
    other_macs_per_sample: int = 0
    tokens_per_layer: list[int] = field(default_factory=list)
    trainable_params: int = 0
    run: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- configs
def stage_sections(cfg: DictConfig) -> list[tuple[DictConfig, Optional[DictConfig]]]:
    """``(model section, run section or None)`` of an experiment config, or of each stage of a comparison's
    methods (``methods.<name>.model`` or ``methods.<name>.stages.<stage>.model``; model type defaults to
    ``compare.model_type``)."""
    if cfg.get("model") is not None:
        return [(cfg.model, cfg.get("run"))]
    methods = cfg.get("methods")
    if not methods:
        raise ConfigError("--cfg-path: the config has neither a 'model' section nor 'methods.<name>' sections")
    default_type = (cfg.get("compare") or {}).get("model_type")
    sections = []
    for name, method in methods.items():
        stages = method.get("stages")
        models = [stage.get("model") for stage in stages.values()] if stages else [method.get("model")]
        for model in models:
            if model is None:
                raise ConfigError(f"methods.{name}: each stage needs a 'model' section")
            sections.append((OmegaConf.merge({"model_type": default_type}, model) if default_type else model, None))
    return sections


def _local_config(folder: Optional[str]) -> Optional[dict]:
    path = os.path.join(str(folder), "config.json") if folder else None
    if path and os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


def vision_shape(cfg: DictConfig) -> tuple[int, int]:
    """(tokens, width) the frozen ViT outputs for one image, from a forward on the meta device."""
    cfg = copy.deepcopy(cfg)
    if _local_config(cfg.get("weights")) is None:
        cfg.weights = None  # a weights file (EVA, CLIP): the factory knows the shape; a folder: it holds the shape
    with init_empty_weights():
        encoder = build_vision_encoder(cfg)
    size = int(cfg.get("image_size", 224))
    out = encoder.to("meta")(torch.empty(1, 3, size, size, device="meta"))
    return int(out.shape[1]), int(out.shape[2])


def _bert_shape(cfg: DictConfig, key: str) -> None:
    """Replace ``<key>.bert`` (a checkpoint folder) by its ``config.json`` in ``<key>.config``."""
    section = cfg[key]
    folder = section.get("bert")
    if folder:
        found = _local_config(folder)
        if found is not None:
            section.config = found
        elif not section.get("config"):
            raise ConfigError(f"model.{key}.bert: no config.json at {folder} and no model.{key}.config: "
                             "the BERT shape is needed to count MACs")
        if key == "qformer" and not section.get("tokenizer"):
            has_vocab = os.path.isfile(os.path.join(str(folder), "vocab.txt"))
            section.tokenizer = str(folder) if has_vocab else MINILM_VOCAB
        section.bert = None
    if key == "qformer" and section.get("tokenizer") not in (None, MINILM_VOCAB) and not os.path.isfile(
            os.path.join(str(section.tokenizer), "vocab.txt")):
        section.tokenizer = MINILM_VOCAB  # bert-base-uncased's vocabulary: only the LM head size depends on it


def _llm_stand_in(cfg: DictConfig) -> None:
    """A zero-layer LLM of the configured width with a byte vocabulary (the connector sees only its width)."""
    settings = _local_config(cfg.llm.get("path"))
    if settings is None:
        if not cfg.llm.get("config"):
            raise ConfigError(f"model.llm.path: no config.json at {cfg.llm.get('path')} and no model.llm.config: "
                             "the LLM width is needed to count MACs")
        settings = OmegaConf.to_container(cfg.llm.config, resolve=True)
    settings = {k: v for k, v in settings.items() if k not in ("quantization_config", "torch_dtype", "model_type")}
    cfg.llm.config = {**settings, **BYTE_VOCAB, "num_hidden_layers": 0}
    cfg.llm.path, cfg.llm.tokenizer = None, "byte"


def shape_only(model_cfg: DictConfig) -> tuple[DictConfig, int, int]:
    """The model config rebuilt to read no weights: returns (config, ViT tokens, ViT width)."""
    cfg = copy.deepcopy(model_cfg)
    tokens, width = vision_shape(cfg.vision)
    cfg.use_features = True
    cfg.vision.width = width
    for key in ("tomeformer", "qformer"):
        if key in cfg:
            _bert_shape(cfg, key)
    if "llm" in cfg:
        _llm_stand_in(cfg)
    for key in ("stage1_checkpoint", "pretrained", "finetuned"):
        if key in cfg:
            cfg[key] = None
    return cfg, tokens, width


# ---------------------------------------------------------------------------------------------- counting
def declared(model_cls: type, name: str) -> Any:
    """A class attribute every model declares for the tools (``STAGE``, ``LOSSES``, ``CONNECTOR``, ``MIN_BATCH``)."""
    value = getattr(model_cls, name, None)
    if value is None:
        raise ConfigError(f"model.arch: {model_cls.__name__} does not declare {name}, which the MACs and comparison "
                          "tools read")
    return value


def connector_module(model: nn.Module) -> nn.Module:
    """The module at the model's declared ``CONNECTOR`` path."""
    return operator.attrgetter(declared(type(model), "CONNECTOR"))(model)


def _pass_name(module: nn.Module, losses: tuple[str, ...], args: tuple, kwargs: dict) -> str:
    """What a connector call computes, read from its inputs (BERT-style keyword arguments for the Q-Former)."""
    first = args[0] if args else None
    has_text = kwargs.get("input_ids") is not None or (
        isinstance(first, torch.Tensor) and not torch.is_floating_point(first))
    has_queries = kwargs.get("query_embeds") is not None
    if has_queries and has_text:
        return "ITM: queries + caption over the image (positives, negative images, negative captions)"
    if has_queries:
        return "queries over the image" + (" (ITC)" if "itc" in losses else "")
    if kwargs.get("past_key_values") is not None:
        return "ITG: caption decoder on the cached query states"
    if has_text:
        return "ITC: caption alone"
    return type(module).__name__


def _call_batch(args: tuple, kwargs: dict) -> int:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise ValueError("connector called without tensors")


class _PassRecorder:
    """Forward hooks on the connector's core module that record each call's MACs and batch."""

    def __init__(self, counter: FlopCounterMode, module: nn.Module, losses: tuple[str, ...]):
        self.counter, self.losses = counter, losses
        self.passes: list[ConnectorPass] = []
        self.widths: list[int] = []          # tokens after each layer, as the first call reports them
        self._open: list[tuple[str, int, int]] = []
        self.handles = [module.register_forward_pre_hook(self._pre, with_kwargs=True),
                        module.register_forward_hook(self._post)]

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        name = _pass_name(module, self.losses, args, kwargs)
        self._open.append((name, _call_batch(args, kwargs), self.counter.get_total_flops()))

    def _post(self, module: nn.Module, args: tuple, output: Any) -> None:
        name, batch, start = self._open.pop()
        self.passes.append(ConnectorPass(name, batch, (self.counter.get_total_flops() - start) // 2))
        if not self.widths:
            self.widths = list(getattr(output, "tokens_per_layer", None) or [])

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _captions(batch: int, max_len: int) -> list[str]:
    # BLIP-2 pads captions to max_txt_len, so their words do not change the count.
    return [" ".join(["a"] * max_len)] * batch


def count_stage(model: nn.Module, tokens: int, width: int, batch: int = 2, seed: int = 0) -> StageMacs:
    """Connector MACs per training sample of ``model`` (built with ``use_features``) on random ViT tokens.

    The model's parameters are frozen by the count (so no autograd state is built): pass a throwaway model.
    """
    model_cls = type(model)
    stage, losses = declared(model_cls, "STAGE"), tuple(declared(model_cls, "LOSSES"))
    min_batch = int(declared(model_cls, "MIN_BATCH"))
    if batch < min_batch:
        raise ConfigError(f"--batch: {stage} needs at least {min_batch} samples per step (its losses "
                          f"{', '.join(losses)} work within the batch)")
    trainable = model.trainable_parameters()
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    samples: dict[str, Any] = {"image_features": torch.randn(batch, tokens, width, generator=generator)}
    core = connector_module(model)
    model.eval()
    embeds = None
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        recorder = _PassRecorder(counter, core, losses)
        try:
            if losses == ("caption",):
                embeds, _ = model.encode_image({**samples, "condition_text": model.prompts_for(samples, batch)})
            else:
                model({**samples, "text_input": _captions(batch, model.max_txt_len)})
        finally:
            recorder.remove()
    total = counter.get_total_flops() // 2
    passes = recorder.passes
    per_sample = [{"pass": p.name, "batch_multiple": p.batch / batch, "macs_per_sample": p.macs // batch}
                  for p in passes]
    queries = getattr(model, "query_tokens", None)
    connector_tokens = int(embeds.shape[1]) if embeds is not None else int(queries.shape[1])
    tokens_per_layer = recorder.widths
    return StageMacs(
        stage=stage, model=model_cls.__name__, vision_tokens=tokens, vision_width=width,
        connector_tokens=connector_tokens, macs_per_sample=total // batch, calls_per_step=len(passes),
        sample_passes_per_sample=sum(p.batch for p in passes) / batch, passes=per_sample,
        other_macs_per_sample=(total - sum(p.macs for p in passes)) // batch, tokens_per_layer=tokens_per_layer,
        trainable_params=trainable)


def run_totals(stage: StageMacs, run: Optional[DictConfig]) -> dict[str, Any]:
    """Connector MACs of a whole schedule from ``run`` (max_iters, global_batch_size or batch_size_train x
    world_size x accum_grad_iters)."""
    if run is None or run.get("max_iters") is None or run.get("batch_size_train") is None:
        return {}
    global_batch = run.get("global_batch_size")
    if global_batch is None:
        global_batch = int(run.batch_size_train) * int(run.get("world_size", 1)) * int(run.get("accum_grad_iters", 1))
    steps = int(run.max_iters)
    return {"max_iters": steps, "global_batch": int(global_batch),
            "connector_macs_forward": stage.macs_per_sample * global_batch * steps}


def build_shape_model(model_cfg: DictConfig) -> tuple[nn.Module, int, int]:
    """The model of ``model_cfg`` at full size from shapes alone (random weights, ViT tokens as input)."""
    cfg, tokens, width = shape_only(model_section(model_cfg))
    model = registry.get_model_class(cfg.arch).from_config(cfg)
    return model, tokens, width


def report(cfg: DictConfig, batch: int = 2) -> list[StageMacs]:
    """Connector MACs of every model (stage) named by an experiment or comparison config."""
    stages = []
    for model_cfg, run in stage_sections(cfg):
        model, tokens, width = build_shape_model(model_cfg)
        stage = count_stage(model, tokens, width, batch=batch)
        stage.run = run_totals(stage, run)
        stages.append(stage)
        del model
    return stages


# ---------------------------------------------------------------------------------------------- output
def format_macs(macs: float) -> str:
    """MACs with a unit: 1.23 G, 45.6 M, 7.89 k."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if macs >= scale:
            return f"{macs / scale:.2f} {unit}"
    return f"{macs:.0f}"


def format_markdown(stages: Sequence[StageMacs]) -> str:
    """A Markdown table of the stages, then each stage's passes."""
    lines = ["| stage | model | ViT tokens | connector tokens | MACs / sample | connector calls / step | "
             "sample passes / sample | trainable params |",
             "|---|---|---|---|---|---|---|---|"]
    for s in stages:
        lines.append(f"| {s.stage} | {s.model} | {s.vision_tokens} x {s.vision_width} | {s.connector_tokens} | "
                     f"{format_macs(s.macs_per_sample)} | {s.calls_per_step} | {s.sample_passes_per_sample:g} | "
                     f"{s.trainable_params / 1e6:.1f}M |")
    for s in stages:
        lines += ["", f"{s.stage} ({s.model}):"]
        for p in s.passes:
            lines.append(f"- {p['pass']}: {format_macs(p['macs_per_sample'])} MACs / sample "
                         f"(batch x{p['batch_multiple']:g})")
        lines.append(f"- projections, heads and similarities outside the core module: "
                     f"{format_macs(s.other_macs_per_sample)} MACs / sample")
        if s.tokens_per_layer:
            lines.append(f"- tokens after each TomeFormer layer: {s.tokens_per_layer}")
        if s.run:
            lines.append(f"- schedule: {s.run['max_iters']} steps x global batch {s.run['global_batch']} = "
                         f"{s.run['connector_macs_forward'] / 1e18:.2f} x 10^18 connector MACs (forward)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = add_config_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=2, help="samples per counted step (>= the model's MIN_BATCH)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    try:
        stages = report(load_config(args.cfg_path, args.options), batch=args.batch)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(s) for s in stages], indent=2))
    else:
        print(format_markdown(stages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
