"""Images per second that each dataset of a config delivers through a DataLoader, to size ``num_workers``.

    python -m lavis_evlgen.tools.loader_throughput --cfg-path projects/evlgen/train/<x>.yaml \
        [--workers 0 4 8] [--batches 50] [--batch-size 64] [--split train] [--options key=value ...]

For every builder under ``datasets`` (merged with its default config as LAVIS does) and every worker
count, it builds the split (``train`` if present, else the first), reads ``--warmup`` batches (worker
start-up, not timed) and then ``--batches`` batches in random order (as training does), with pinned
memory when a GPU is present, and prints images/s and the unreadable samples skipped. The rate is
what the model can consume at most from that loader: pick the smallest ``num_workers`` whose rate
exceeds the training step's images/s.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from lavis.common.config import Config
from lavis.common.registry import registry
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, RandomSampler

import lavis_evlgen  # noqa: F401  registers the builders
from lavis_evlgen.common.cli_config import add_config_arguments, load_config
from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.datasets.datasets.caption import SKIPPED_KEY
from lavis_evlgen.runners.train_loader import SkipCountingCollate


@dataclass
class Throughput:
    """What one timed run read."""

    images: int
    skipped: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def measure(dataset: Dataset, workers: int, batch_size: int, batches: int, warmup: int = 2,
            seed: int = 0) -> Throughput:
    """Read ``warmup`` + ``batches`` batches of ``dataset`` in random order; time the last ``batches``."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)),
                        collate_fn=SkipCountingCollate(getattr(dataset, "collater", None)),
                        pin_memory=torch.cuda.is_available(), drop_last=False)
    iterator = iter(loader)
    images = skipped = 0
    start = time.perf_counter()
    for step in range(warmup + batches):
        try:
            batch = next(iterator)
        except StopIteration:
            if step <= warmup:
                raise ValueError(f"the split has {len(dataset)} samples: too few for {warmup} warm-up batches "
                                 f"of {batch_size}") from None
            break
        if step == warmup - 1:
            start = time.perf_counter()
        if step >= warmup:
            skipped += int(batch.get(SKIPPED_KEY, 0))
            image = batch.get("image")
            images += int(image.shape[0]) if isinstance(image, torch.Tensor) else 0
    return Throughput(images=images, skipped=skipped, seconds=time.perf_counter() - start)


def dataset_configs(cfg_path: str, options: Sequence[str]) -> tuple[dict[str, DictConfig], DictConfig]:
    """Each builder's config (its default by ``type``, merged with the file's ``datasets`` section) and
    the file's ``run`` section."""
    config = load_config(cfg_path, options)
    if not config.get("datasets"):
        raise ConfigError(f"{cfg_path}: no 'datasets' section")
    unknown = [name for name in config.datasets if registry.get_builder_class(name) is None]
    if unknown:
        raise ConfigError(f"datasets: unknown builder(s) {unknown}")
    merged = Config.build_dataset_config(config).datasets
    return {name: merged[name] for name in config.datasets}, config.get("run") or OmegaConf.create()


def main(argv: Sequence[str] | None = None) -> list[tuple[str, str, int, Throughput]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, help="experiment or dataset YAML with a 'datasets' section")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts to try (default: run.num_workers, else 4)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: run.batch_size_train, else 32")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (worker start-up)")
    parser.add_argument("--split", default=None, help="split to read (default: train, else the first)")
    args = parser.parse_args(argv)
    configs, run = dataset_configs(args.cfg_path, args.options)
    workers = args.workers or [int(run.get("num_workers", 4))]
    batch_size = args.batch_size or int(run.get("batch_size_train", 32))
    rows = []
    print(f"{'dataset':32s} {'split':8s} {'workers':>7s} {'batch':>5s} {'images':>7s} {'images/s':>9s} "
          f"{'skipped':>7s}")
    for name, cfg in configs.items():
        splits = registry.get_builder_class(name)(cfg).build_datasets()
        split = args.split or ("train" if "train" in splits else next(iter(splits)))
        if split not in splits:
            raise ValueError(f"--split: dataset {name} has no split '{split}'; have {sorted(splits)}")
        for count in workers:
            result = measure(splits[split], count, batch_size, args.batches, args.warmup)
            rows.append((name, split, count, result))
            print(f"{name:32s} {split:8s} {count:7d} {batch_size:5d} {result.images:7d} "
                  f"{result.images_per_second:9.1f} {result.skipped:7d}", flush=True)
    return rows


if __name__ == "__main__":
    main()
