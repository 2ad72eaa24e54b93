"""The comparison plan, declared once as data: methods, their stages, and how the step budget is split.

A comparison config names its methods under ``methods.<name>``; each has its stages, in order::

    methods:
      two_stage_baseline:
        label: BLIP-2 stage 1 + stage 2
        stages:
          stage1: {model: {arch: blip2_stage1}, proportion: 250}
          stage2: {model: {arch: blip2_stage2_llama}, proportion: 80, init_from: stage1}

Every method gets the same budget, ``compare.steps`` optimizer steps, which its stages split in proportion
to ``proportion``; ``init_from`` starts a stage from an earlier stage's last checkpoint. ``compare.vision``
is merged into every stage's ``model.vision`` (one frozen ViT for all, declared once). What a stage
trains is asked from its model class (``LOSSES``): a stage whose loss is ``caption`` trains with the
captioning task and is validated on ``compare.valid_split`` every ``compare.eval_every`` steps; any other
(BLIP-2 stage 1's ITC + ITM + ITG) trains with LAVIS's image-text pretraining task. A method's last stage
must caption; a method set to null (``--options methods.<name>=null``) is left out. ``methods.<name>.lr``
fixes a method's peak learning rate; without it the lr sweep (``compare.sweep``) chooses it.
``compare.reference`` names the method whose final val CIDEr is the time-to-target target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lavis.common.registry import registry
from omegaconf import DictConfig, OmegaConf

from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.tools.flops import declared

CAPTION_TASK = "evlgen_captioning"
PRETRAIN_TASK = "image_text_pretrain"


@dataclass(frozen=True)
class Stage:
    """One training stage of a method: its model section, task and steps of the method's budget."""

    name: str
    model: DictConfig
    task: str
    start: int
    steps: int
    init_from: Optional[str] = None

    @property
    def captions(self) -> bool:
        return self.task == CAPTION_TASK


@dataclass(frozen=True)
class Method:
    """A method of the comparison: its stages, in order, over ``compare.steps``; ``lr`` None: swept."""

    name: str
    label: str
    stages: tuple[Stage, ...]
    lr: Optional[float] = None

    @property
    def steps(self) -> int:
        return sum(stage.steps for stage in self.stages)


def split_budget(steps: int, proportions: list[float], key: str) -> list[int]:
    """``steps`` split in proportion (rounded, the last stage takes the rest); each stage at least one step."""
    total = float(sum(proportions))
    counts = [round(steps * p / total) for p in proportions[:-1]]
    counts.append(steps - sum(counts))
    if min(counts) < 1:
        raise ConfigError(f"{key}: {steps} steps split {proportions} leaves a stage without steps")
    return counts


def stage_task(model: DictConfig, key: str) -> str:
    """The task a stage trains with, from the losses its model class declares."""
    model_cls = registry.get_model_class(model.get("arch"))
    if model_cls is None:
        raise ConfigError(f"{key}.arch: unknown model '{model.get('arch')}'")
    return CAPTION_TASK if tuple(declared(model_cls, "LOSSES")) == ("caption",) else PRETRAIN_TASK


def build_methods(cfg: DictConfig, steps: Optional[int] = None, only: Optional[set[str]] = None) -> list[Method]:
    """The methods of ``cfg`` (those named in ``only``, if given) with their stages placed on ``steps``
    (default ``compare.steps``)."""
    steps = int(cfg.compare.steps if steps is None else steps)
    methods = []
    for name, section in (cfg.get("methods") or {}).items():
        if (only is not None and name not in only) or section is None:
            continue
        stages_cfg = section.get("stages") if section is not None else None
        if not isinstance(stages_cfg, DictConfig) or not stages_cfg:
            raise ConfigError(f"methods.{name}.stages: a mapping of stage name to {{model, proportion, init_from}} "
                              "is needed")
        proportions = []
        for stage_name, stage in stages_cfg.items():
            proportion = (stage or {}).get("proportion", 1)
            if not isinstance(proportion, (int, float)) or proportion <= 0:
                raise ConfigError(f"methods.{name}.stages.{stage_name}.proportion: a positive number, "
                                  f"got {proportion!r}")
            proportions.append(float(proportion))
        counts = split_budget(steps, proportions, f"methods.{name}.stages")
        stages, start = [], 0
        vision = cfg.compare.get("vision") or {}
        for (stage_name, stage), count in zip(stages_cfg.items(), counts):
            key = f"methods.{name}.stages.{stage_name}"
            if stage.get("model") is None:
                raise ConfigError(f"{key}.model: missing")
            model = OmegaConf.merge(stage.model, {"vision": vision})
            if not model.get("model_type"):
                model.model_type = cfg.compare.model_type
            init_from = stage.get("init_from")
            if init_from is not None and init_from not in {s.name for s in stages}:
                raise ConfigError(f"{key}.init_from: '{init_from}' is not an earlier stage of methods.{name}")
            stages.append(Stage(str(stage_name), model, stage_task(model, f"{key}.model"), start, count, init_from))
            start += count
        if not stages[-1].captions:
            raise ConfigError(f"methods.{name}.stages: the last stage must train a captioning model "
                              "(one whose LOSSES are ('caption',)), to be validated")
        lr = section.get("lr")
        methods.append(Method(name, str(section.get("label", name)), tuple(stages),
                              None if lr is None else float(lr)))
    if not methods:
        raise ConfigError("methods: no methods to compare")
    return methods


def check_plan(cfg: DictConfig) -> list[Method]:
    """The ``compare`` section checked (ConfigError naming the key) and the methods built."""
    compare = cfg.get("compare")
    if compare is None:
        raise ConfigError("compare: missing section")
    for key in ("output_dir", "model_type", "reference"):
        if not compare.get(key):
            raise ConfigError(f"compare.{key}: missing")
    for key, minimum in (("steps", 1), ("eval_every", 1)):
        value = compare.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"compare.{key}: an integer >= {minimum} is needed, got {value!r}")
    seeds = compare.get("seeds")
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"compare.seeds: a list of distinct integers is needed, got {seeds!r}")
    methods = build_methods(cfg)
    if compare.reference not in {m.name for m in methods}:
        raise ConfigError(f"compare.reference: '{compare.reference}' is not one of methods "
                          f"{[m.name for m in methods]}")
    sweep = compare.get("sweep")
    swept = {m.name for m in methods if m.lr is None}
    if swept:
        if not sweep or not sweep.get("lrs") or not sweep.get("steps"):
            raise ConfigError(f"compare.sweep: lrs and steps are needed to choose the lr of {sorted(swept)} "
                              "(or set methods.<name>.lr)")
        build_methods(cfg, int(sweep.steps), only=swept)
    for key in ("datasets", "run"):
        if not cfg.get(key):
            raise ConfigError(f"{key}: missing section")
    return methods
