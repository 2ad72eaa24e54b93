"""``evlgen_pretrain``: captioning-loss pre-training on several datasets, weighted by size or by ratios.

Training is ``evlgen_captioning``'s (the model's captioning loss; evaluation splits are captioned and
scored the same way). The datasets' training splits are combined

* by size (default, the paper's choice, appendix D): runner_evlgen concatenates them, so each is
  sampled in proportion to its length (a webdataset stream counts its ``build_info.num_samples``);
* by ratio, with ``run.train_dataset_ratios: {<builder name>: <weight>, ...}`` naming every dataset
  that has a training split: they are replaced by one :class:`RatioMixture` under the name
  ``evlgen_pretrain_mixture``, as long as ``run.train_dataset_length`` samples (default: the sum of
  the sizes). Unlike LAVIS's list aligned to its (map-style, webdataset) loader pair, the weights
  here are per dataset and mix within a batch.
"""
from __future__ import annotations

from typing import Any

from lavis.common.registry import registry
from omegaconf import OmegaConf

from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.datasets.datasets.mixture import RatioMixture
from lavis_evlgen.tasks.captioning import EvlgenCaptionTask

MIXTURE_NAME = "evlgen_pretrain_mixture"


@registry.register_task("evlgen_pretrain")
class EvlgenPretrainTask(EvlgenCaptionTask):
    """Pre-training with size- or ratio-weighted training datasets (see module doc)."""

    def __init__(self, *args, ratios: dict[str, float] | None = None, length: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ratios = ratios
        self.length = length

    @classmethod
    def setup_task(cls, cfg) -> "EvlgenPretrainTask":
        run = cfg.run_cfg
        ratios = run.get("train_dataset_ratios")
        if ratios is not None and not OmegaConf.is_dict(ratios) and not isinstance(ratios, dict):
            raise ConfigError("run.train_dataset_ratios: expected a mapping {dataset builder name: weight}, "
                              f"got {ratios!r}")
        ratios = {str(k): float(v) for k, v in dict(ratios).items()} if ratios is not None else None
        length = run.get("train_dataset_length")
        return cls(num_beams=int(run.get("num_beams", 5)), max_len=int(run.get("max_len", 30)),
                   min_len=int(run.get("min_len", 8)), evaluate=bool(run.get("evaluate", False)),
                   report_metric=bool(run.get("report_metric", True)), ratios=ratios,
                   length=int(length) if length is not None else None)

    def build_datasets(self, cfg) -> dict[str, dict[str, Any]]:
        datasets = super().build_datasets(cfg)
        if self.ratios is None:
            return datasets
        train = {name: splits["train"] for name, splits in datasets.items() if "train" in splits}
        if set(self.ratios) != set(train):
            raise ConfigError(f"run.train_dataset_ratios: must name exactly the datasets with a training split "
                              f"{sorted(train)}; got {sorted(self.ratios)}")
        try:
            mixture = RatioMixture(train, self.ratios, self.length)
        except ValueError as err:
            raise ConfigError(f"run.train_dataset_ratios: {err}") from err
        for name in train:
            del datasets[name]["train"]
        datasets = {name: splits for name, splits in datasets.items() if splits}
        datasets[MIXTURE_NAME] = {"train": mixture}
        return datasets
