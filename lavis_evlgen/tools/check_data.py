"""Check a data folder against a config before training: what is named, what is found, what reads.

    python -m lavis_evlgen.tools.check_data --cfg-path projects/evlgen/train/pretrain_opt2.7b_250k.yaml
                                            [--read 8] [--options ...]

For every data set of the config it builds the split(s) through the data set's own builder (a missing
annotation file or folder is reported with the config key that names it), counts the images or videos
the annotations name against the files found, and reads ``--read`` of them (spread over the split)
through the data set's own loader. Webdataset shards are counted the same way (named, found, ``.tar``
files present but not named) and ``--read`` shards are opened. Exit status 0 when everything named is
found and every file read was readable, 1 otherwise; docs/data.md says what each builder expects.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from dataclasses import dataclass, field
from typing import Any, Optional

from lavis.common.registry import registry
from PIL import Image

import lavis_evlgen  # noqa: F401  registers the plugin
from lavis_evlgen.common.cli_config import add_config_arguments, lavis_config

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")


@dataclass
class Check:
    """One row of the report: a split (or a shard set) of one data set."""

    dataset: str
    split: str
    kind: str
    named: int = 0
    found: int = 0
    read: int = 0
    unreadable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missing and not self.unreadable


def spread(count: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(count)`` (all of them when ``n >= count``)."""
    if n >= count:
        return list(range(count))
    return [round(i * (count - 1) / max(n - 1, 1)) for i in range(n)]


def check_split(name: str, split: str, dataset: Any, read: int) -> Check:
    """Count the media a split's annotations name against the files found; read ``read`` of them."""
    key = getattr(dataset, "media_key", "image")
    first_entry: dict[str, int] = {}
    for index, ann in enumerate(dataset.annotation):
        first_entry.setdefault(os.path.join(dataset.vis_root, ann[key]), index)
    present = [p for p in first_entry if os.path.exists(p)]
    found = set(present)
    check = Check(name, split, key, named=len(first_entry), found=len(present),
                  missing=[p for p in first_entry if p not in found])
    for i in spread(len(present), read):
        check.read += 1
        if dataset.load_media(dataset.annotation[first_entry[present[i]]]) is None:
            check.unreadable.append(present[i])
    return check


def check_shards(name: str, builder: Any, read: int) -> Check:
    """Count a shard builder's named shards against the ``.tar`` files found; open ``read`` of them."""
    inventory = builder.shard_inventory()
    check = Check(name, "train", "shards", named=len(inventory.named), found=len(inventory.present),
                  missing=list(inventory.absent))
    if inventory.unnamed:
        check.error = (f"{len(inventory.unnamed)} .tar file(s) present but not named by build_info.shards "
                       f"(never read; first: {inventory.unnamed[0]})")
    present = inventory.present
    for i in spread(len(present), read):
        check.read += 1
        try:
            check.unreadable += [f"{present[i]}:{member}" for member in undecodable_images(present[i])]
        except (tarfile.TarError, OSError) as err:
            check.unreadable.append(f"{present[i]} ({err})")
    return check


def undecodable_images(shard: str) -> list[str]:
    """The image members of a webdataset shard that do not decode (TarError/OSError for a broken tar)."""
    bad = []
    with tarfile.open(shard) as tar:
        for member in tar:
            if member.isfile() and member.name.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES:
                try:
                    Image.open(io.BytesIO(tar.extractfile(member).read())).load()
                except (OSError, ValueError, Image.DecompressionBombError):
                    bad.append(member.name)
    return bad


def check_dataset(name: str, data_cfg: Any, read: int) -> list[Check]:
    """Every split of one data set of the config (one error row if the builder cannot build it)."""
    builder = registry.get_builder_class(name)(data_cfg)
    try:
        if hasattr(builder, "shard_inventory"):
            return [check_shards(name, builder, read)]
        splits = builder.build_datasets()
    except (FileNotFoundError, ValueError, KeyError) as err:
        return [Check(name, "-", "-", error=str(err))]
    return [check_split(name, split, dataset, read) for split, dataset in splits.items()
            if hasattr(dataset, "annotation") and hasattr(dataset, "load_media")]


def report(checks: list[Check]) -> str:
    """The table printed by the command, then one line per problem."""
    lines = [f"{'dataset':26} {'split':8} {'kind':7} {'named':>9} {'found':>9} {'read':>5} {'unreadable':>10}"]
    for c in checks:
        lines.append(f"{c.dataset:26} {c.split:8} {c.kind:7} {c.named:9d} {c.found:9d} {c.read:5d} "
                     f"{len(c.unreadable):10d}  {'ok' if c.ok else 'PROBLEM'}")
    for c in checks:
        if c.error:
            lines.append(f"{c.dataset}/{c.split}: {c.error}")
        if c.missing:
            lines.append(f"{c.dataset}/{c.split}: {len(c.missing)} named but not found, first: {c.missing[0]}")
        for path in c.unreadable:
            lines.append(f"{c.dataset}/{c.split}: unreadable: {path}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that the data a config names is there and readable.")
    add_config_arguments(parser)
    parser.add_argument("--read", type=int, default=8, help="files (or shards) read per split")
    args = parser.parse_args(argv)
    cfg = lavis_config(args.cfg_path, args.options)
    checks = [c for name, data_cfg in cfg.datasets_cfg.items() for c in check_dataset(name, data_cfg, args.read)]
    print(report(checks))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
