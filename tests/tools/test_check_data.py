"""check_data: counts named against found, reads samples through the builders' own loaders."""
from __future__ import annotations

from lavis_evlgen.tools.check_data import main, spread
from tests.datasets.benchmark_fixtures import write_shards
from tests.runners.tiny_run import experiment, write_caption_data, write_experiment


def test_spread_covers_both_ends():
    assert spread(10, 3) == [0, 4, 9]
    assert spread(2, 8) == [0, 1]
    assert spread(0, 8) == []


def test_complete_folder_passes(tmp_path, capsys):
    data = write_caption_data(tmp_path / "data")
    cfg = write_experiment(tmp_path / "exp.yaml", experiment(data, tmp_path / "out"))
    assert main(["--cfg-path", str(cfg)]) == 0
    rows = {line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["train"][3:7] == ["8", "8", "8", "0"]  # named, found, read, unreadable
    assert rows["val"][3:7] == ["3", "3", "3", "0"]


def test_missing_and_unreadable_files_are_named(tmp_path, capsys):
    data = write_caption_data(tmp_path / "data", corrupt_train=2)
    (data / "images" / "val_10.png").unlink()
    cfg = write_experiment(tmp_path / "exp.yaml", experiment(data, tmp_path / "out"))
    assert main(["--cfg-path", str(cfg), "--read", "100"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:4]}
    assert rows["train"][3:7] == ["10", "10", "10", "2"]
    assert rows["val"][3:5] == ["3", "2"]
    assert "caption_folder/val: 1 named but not found, first: " in out and out.count("unreadable: ") == 2


def test_missing_annotation_file_names_the_config_key(tmp_path, capsys):
    data = write_caption_data(tmp_path / "data")
    (data / "test.json").unlink()
    cfg = write_experiment(tmp_path / "exp.yaml", experiment(data, tmp_path / "out"))
    assert main(["--cfg-path", str(cfg)]) == 1
    assert "build_info.annotations.test.storage" in capsys.readouterr().out


def test_shards_are_counted_and_their_images_decoded(tmp_path, capsys):
    write_shards(tmp_path, n_shards=3)  # one corrupt image per shard, plus laion/truncated.tar
    cfg = experiment(tmp_path / "unused", tmp_path / "out")
    cfg["datasets"] = {"laion115M": {
        "build_info": {"root": str(tmp_path), "shards": ["laion/{00000..00003}.tar", "laion/truncated.tar"],
                       "num_samples": 10},
        "vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32}},
        "text_processor": {"train": {"name": "blip_caption"}}}}
    assert main(["--cfg-path", str(write_experiment(tmp_path / "exp.yaml", cfg)), "--read", "10"]) == 1
    out = capsys.readouterr().out
    row = out.splitlines()[1].split()
    assert row[:7] == ["laion115M", "train", "shards", "5", "4", "4", "4"]  # named, found, read, unreadable
    assert out.count(".jpg") == 3 and "truncated.tar (" in out
    assert "laion115M/train: 1 named but not found, first: " in out and "00003.tar" in out
