"""Shard builders count the shards named against the .tar files found, and the configs name the authors' ranges."""
from __future__ import annotations

import logging

from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.datasets.webdataset_shards import expand_shards
from tests.datasets.benchmark_fixtures import write_shards

PROCESSORS = {"vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32}}}


def builder(name: str, root, **build_info):
    cfg = OmegaConf.load(config_path(f"datasets/{name}/defaults.yaml")).datasets[name]
    return registry.get_builder_class(name)(OmegaConf.merge(cfg, PROCESSORS,
                                                            {"build_info": {"root": str(root), **build_info}}))


def test_named_found_absent_and_unnamed_shards_are_counted_and_logged(tmp_path, caplog):
    write_shards(tmp_path, n_shards=3)  # laion/00000..00002.tar and laion/truncated.tar
    (tmp_path / "laion/notes.txt").write_text("not a shard")
    shards = builder("laion115M", tmp_path, shards="laion/{00001..00004}.tar", num_samples=10)
    inventory = shards.shard_inventory()
    assert [p.rsplit("/", 1)[1] for p in inventory.present] == ["00001.tar", "00002.tar"]
    assert [p.rsplit("/", 1)[1] for p in inventory.absent] == ["00003.tar", "00004.tar"]
    assert sorted(p.rsplit("/", 1)[1] for p in inventory.unnamed) == ["00000.tar", "truncated.tar"]
    with caplog.at_level(logging.INFO):
        train = shards.build_datasets()["train"]
    assert len(train.shards) == 2
    text = caplog.text
    assert ("4 shard(s) named, 2 found, 2 named but absent, 2 .tar file(s) in the same folder(s) not named"
            in text)
    assert "2 .tar file(s) next to the named shards are not named and will never be read" in text
    assert "2 of 4 shards are absent" in text


def test_a_complete_range_reports_nothing_missing(tmp_path, caplog):
    write_shards(tmp_path, n_shards=2)
    (tmp_path / "laion/truncated.tar").unlink()
    with caplog.at_level(logging.INFO):
        inventory = builder("ccs14M", tmp_path, shards="laion/{00000..00001}.tar", num_samples=8).shard_inventory()
        builder("ccs14M", tmp_path, shards="laion/{00000..00001}.tar", num_samples=8).build_datasets()
    assert (len(inventory.named), len(inventory.present), inventory.absent, inventory.unnamed) == (2, 2, [], [])
    assert "2 shard(s) named, 2 found, 0 named but absent, 0 .tar file(s)" in caplog.text
    assert "WARNING" not in caplog.text


def test_configs_name_the_authors_shard_ranges():
    """lavis/configs/datasets/laion/{laion115m,ccs14m}.yaml: {00000..10488} and {00000..01255}."""
    for name, folder, count in (("laion115M", "laion115m", 10489), ("ccs14M", "ccs14m", 1256)):
        shards = OmegaConf.load(config_path(f"datasets/{name}/defaults.yaml")).datasets[name].build_info.shards
        paths = expand_shards(shards)
        assert len(paths) == count and paths[0] == f"{folder}/00000.tar"
        assert paths[-1] == f"{folder}/{count - 1:05d}.tar"
