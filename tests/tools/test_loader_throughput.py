"""loader_throughput: images/s and skip counts per dataset and worker count, from a config file."""
from __future__ import annotations

import yaml

from lavis_evlgen.tools.loader_throughput import main
from tests.datasets.benchmark_fixtures import write_capfilt, write_shards


def test_reports_every_dataset_and_worker_count(tmp_path, capsys):
    write_capfilt(tmp_path)
    write_shards(tmp_path)
    processor = {"train": {"name": "blip_image_eval", "image_size": 32}}
    capfilt = {"root": str(tmp_path), "annotations": {"train": {"storage": "capfilt/ccs.json"}},
               "images": {"storage": "capfilt/images"}, "records_dir": str(tmp_path / "records")}
    config = {
        "datasets": {
            "evlgen_capfilt_ccs": {"build_info": capfilt, "vis_processor": processor},
            "laion115M": {"build_info": {"root": str(tmp_path), "shards": "laion/{00000..00001}.tar",
                                                    "num_samples": 40, "shuffle_buffer": 2},
                                     "vis_processor": processor},
        },
        "run": {"batch_size_train": 2, "num_workers": 3},
    }
    cfg_path = tmp_path / "data.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    rows = main(["--cfg-path", str(cfg_path), "--workers", "0", "1", "--batches", "2", "--warmup", "1"])
    assert [(name, split, workers) for name, split, workers, _ in rows] == [
        ("evlgen_capfilt_ccs", "train", 0), ("evlgen_capfilt_ccs", "train", 1),
        ("laion115M", "train", 0), ("laion115M", "train", 1)]
    for name, _, _, result in rows:
        assert result.images > 0 and result.images_per_second > 0
        if name == "evlgen_capfilt_ccs":  # 5 records in batches of 2: the timed ones hold 2 + 1
            assert result.images + result.skipped == 3
        else:
            assert result.images + result.skipped == 4
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["dataset", "split", "workers", "batch", "images", "images/s", "skipped"]
    assert len(printed) == 5 and printed[1].split()[:4] == ["evlgen_capfilt_ccs", "train", "0", "2"]


def test_run_section_gives_default_workers_and_batch(tmp_path):
    write_capfilt(tmp_path)
    config = {"datasets": {"evlgen_capfilt_ccs": {
        "build_info": {"root": str(tmp_path), "annotations": {"train": {"storage": "capfilt/ccs.json"}},
                       "images": {"storage": "capfilt/images"}, "records_dir": str(tmp_path / "records")},
        "vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32}}}},
        "run": {"batch_size_train": 1, "num_workers": 0}}
    cfg_path = tmp_path / "data.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    rows = main(["--cfg-path", str(cfg_path), "--batches", "3", "--warmup", "0"])
    assert len(rows) == 1 and rows[0][2] == 0
    assert rows[0][3].images + rows[0][3].skipped == 3
