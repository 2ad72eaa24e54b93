"""``evlgen_scst``: self-critical sequence training (Rennie et al. 2017) with CIDEr-D rewards.

Each training step, for every sample of the batch (model in eval mode, no gradients):

1. greedy-decode one caption (the baseline) and sample ``k`` captions from the full distribution;
2. reward each with CIDEr-D against the sample's training references, document frequencies taken
   over the whole training split (:class:`~lavis_evlgen.tasks.cider_d.CiderD`);
3. advantage = reward(sample) - reward(greedy caption of the same sample).

Then one forward pass of the model (in its training mode, through the DDP wrapper if any) scores
the sampled token sequences and returns ``sum_i A_i * -log p(sample_i) / (tokens in all samples)``,
the policy-gradient loss, whose gradients reach the trainable parts only (connector, projections and,
in video models, the temporal modules). With ``run.scst_xe_weight`` = w > 0 the loss is
``(1 - w) * SCST + w * cross-entropy`` on the reference caption of each sample, in the same pass.

Run keys: ``scst_samples`` (k, default 5), ``scst_xe_weight`` (w, default 0), ``scst_max_len``
(sampled caption length in tokens, default ``max_len``), ``scst_temperature`` (default 1.0); evaluation
as ``evlgen_captioning`` (``num_beams``, ``max_len``, ``min_len``, ``repetition_penalty``). The model must
score given token sequences (:class:`~lavis_evlgen.models.sequence_scoring.SequenceScoringMixin`:
``evlgen_video_opt``, ``evlgen_video_vicuna``; on image data these work as image models). Exactly one training dataset:
its batches carry ``image_id`` as the dataset's internal index, which keys the references.

``last_stats`` holds the latest step's mean sampled reward, mean greedy reward and mean advantage.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Optional

import torch
from lavis.common.registry import registry
from torch.nn.parallel import DistributedDataParallel

from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.models.sequence_scoring import SequenceScoringMixin
from lavis_evlgen.tasks.captioning import EvlgenCaptionTask
from lavis_evlgen.tasks.cider_d import CiderD

logger = logging.getLogger(__name__)


def pad_rows(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D token tensors into ``[R, T]`` ids and a 0/1 mask."""
    length = max(len(r) for r in rows)
    tokens = torch.full((len(rows), length), pad_id, dtype=torch.long, device=rows[0].device)
    mask = torch.zeros((len(rows), length), dtype=torch.long, device=rows[0].device)
    for i, row in enumerate(rows):
        tokens[i, :len(row)], mask[i, :len(row)] = row, 1
    return tokens, mask


@registry.register_task("evlgen_scst")
class SCSTCaptionTask(EvlgenCaptionTask):
    """Caption task whose training step is self-critical sequence training (see module doc)."""

    def __init__(self, num_beams: int, max_len: int, min_len: int, evaluate: bool, report_metric: bool = True,
                 repetition_penalty: Optional[float] = None, num_samples: int = 5, xe_weight: float = 0.0,
                 sample_max_len: int = 30, temperature: float = 1.0):
        super().__init__(num_beams=num_beams, max_len=max_len, min_len=min_len, evaluate=evaluate,
                         report_metric=report_metric, repetition_penalty=repetition_penalty)
        if num_samples < 1:
            raise ConfigError(f"run.scst_samples: must be >= 1, got {num_samples}")
        if not 0.0 <= xe_weight < 1.0:
            raise ConfigError(f"run.scst_xe_weight: must be in [0, 1), got {xe_weight}")
        if temperature <= 0:
            raise ConfigError(f"run.scst_temperature: must be > 0, got {temperature}")
        self.num_samples, self.xe_weight = num_samples, xe_weight
        self.sample_max_len, self.temperature = sample_max_len, temperature
        self.cider: CiderD | None = None
        self.last_stats: dict[str, float] = {}

    @classmethod
    def setup_task(cls, cfg) -> "SCSTCaptionTask":
        run = cfg.run_cfg
        settings = cls.caption_settings(run)
        return cls(**settings, num_samples=int(run.get("scst_samples", 5)),
                   xe_weight=float(run.get("scst_xe_weight", 0.0)),
                   sample_max_len=int(run.get("scst_max_len", settings["max_len"])),
                   temperature=float(run.get("scst_temperature", 1.0)))

    def build_datasets(self, cfg) -> dict:
        """LAVIS's datasets, plus the CIDEr-D corpus from the training split's references."""
        datasets = super().build_datasets(cfg)
        splits = list(cfg.run_cfg.get("train_splits") or [])
        if cfg.run_cfg.get("evaluate", False) or not splits:
            return datasets
        train = [(name, by_split[split]) for name, by_split in datasets.items() for split in splits
                 if split in by_split]
        if len(train) != 1:
            raise ConfigError(f"run.task evlgen_scst: needs exactly one training dataset (its image ids key the "
                              f"reward references), got {[name for name, _ in train]}")
        self.cider = CiderD(self.training_references(train[0][1]))
        logger.info("SCST: CIDEr-D corpus of %d training images/videos", len(self.cider.references))
        return datasets

    @staticmethod
    def training_references(dataset) -> dict[int, list[str]]:
        """Processed captions of each training image, keyed by the dataset's ``image_id`` index."""
        references: dict[int, list[str]] = defaultdict(list)
        for ann in dataset.annotation:
            references[dataset.img_ids[ann["image_id"]]].append(dataset.text_processor(ann["caption"]))
        return dict(references)

    def train_step(self, model, samples: dict[str, Any]) -> torch.Tensor:
        module = model.module if isinstance(model, DistributedDataParallel) else model
        if not isinstance(module, SequenceScoringMixin):
            raise ConfigError(f"run.task evlgen_scst: model {type(module).__name__} cannot score sampled captions; "
                              "use evlgen_video_opt / evlgen_video_vicuna (they also take images)")
        if self.cider is None:
            raise RuntimeError("evlgen_scst: no CIDEr-D corpus; the task's build_datasets was not run on the "
                               "training data")
        keys = [int(k) for k in samples["image_id"]]
        training = module.training
        module.eval()
        greedy = module.sample_captions(samples, greedy=True, max_length=self.sample_max_len)
        drawn = module.sample_captions(samples, num_samples=self.num_samples, max_length=self.sample_max_len,
                                       temperature=self.temperature)
        module.train(training)
        sample_keys = [keys[int(i)] for i in drawn.source]
        rewards = torch.as_tensor(self.cider.scores(drawn.texts, sample_keys), dtype=torch.float32)
        baseline = torch.as_tensor(self.cider.scores(greedy.texts, keys), dtype=torch.float32)
        advantage = (rewards - baseline[drawn.source.cpu()]).to(drawn.tokens.device)
        self.last_stats = {"reward_sample": rewards.mean().item(), "reward_greedy": baseline.mean().item(),
                           "advantage": advantage.mean().item()}
        weights = (1.0 - self.xe_weight) * advantage / drawn.mask.sum()
        rows = [row[mask.bool()] for row, mask in zip(drawn.tokens, drawn.mask)]
        source = drawn.source
        if self.xe_weight > 0:
            references = self._reference_tokens(module, samples["text_input"], drawn.tokens.device)
            rows += references
            source = torch.cat([source, torch.arange(len(references), device=source.device)])
            total = sum(len(r) for r in references)
            weights = torch.cat([weights, torch.full((len(references),), self.xe_weight / total,
                                                     device=weights.device)])
        tokens, mask = pad_rows(rows, module.tokenizer.pad_token_id)
        return model({**samples, "sequences": tokens, "sequence_mask": mask, "sequence_source": source,
                      "sequence_weights": weights})["loss"]

    @staticmethod
    def _reference_tokens(module, captions: list[str], device: torch.device) -> list[torch.Tensor]:
        """Token ids of each reference caption and the end marker, as the captioning loss scores them."""
        ids = module.tokenizer([c + module.caption_end for c in captions], add_special_tokens=False, truncation=True,
                               max_length=module.max_txt_len).input_ids
        return [torch.tensor(row, dtype=torch.long, device=device) for row in ids]
