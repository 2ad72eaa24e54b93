"""The comparison tool on random tiny parts and a very small budget: it trains all three methods and
writes its table, JSON and loss-curve picture."""
import json
import os

import pytest
import torch.distributed as dist

from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.tools import compare

CONFIG = "projects/compare/embedded.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_options(tmp_path):
    gen = "datasets.shapes_caption.build_info.generate"
    return ["compare.model_type=tiny", "compare.steps=4", "compare.stage1_share=0.5",
            f"compare.output_dir={tmp_path / 'out'}", f"datasets.shapes_caption.build_info.root={tmp_path / 'data'}",
            f"{gen}.n_train=12", f"{gen}.n_val=2", f"{gen}.n_test=3", f"{gen}.image_size=64",
            "run.batch_size_train=4", "run.max_len=4", "run.min_len=1"]


@pytest.fixture(autouse=True)
def in_repo_and_no_leftover_group(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_compare_tiny_writes_table_json_and_picture(tmp_path, capsys):
    assert compare.main(["--cfg-path", CONFIG, "--options", *tiny_options(tmp_path)]) == 0
    out = tmp_path / "out"
    report = json.loads((out / "comparison.json").read_text())
    rows = {row["method"]: row for row in report["methods"]}
    assert list(rows) == ["evlgen", "blip2_stage2_only", "blip2_two_stage"]
    runs = report["runs"]
    assert [runs[name]["steps"] for name in ("evlgen", "blip2_stage2_only", "blip2_stage1",
                                             "blip2_stage2_after_stage1")] == [4, 4, 2, 2]
    for name, run in runs.items():
        assert [step for step, _ in run["losses"]] == list(range(1, run["steps"] + 1)), name
        assert run["train_seconds"] > 0
    assert runs["blip2_stage1"]["metrics"] == {}
    for row in rows.values():
        assert 0 <= row["cider"] and row["final_loss"] > 0 and row["steps_per_second"] > 0
    # Tiny parts: hand counts from tests/tools/test_flops.py; stage 1 + 2 averages over its 2 + 2 steps.
    assert rows["evlgen"]["connector_macs_per_sample"] == [311_424]
    assert rows["blip2_stage2_only"]["connector_macs_per_sample"] == [119_040]
    stage1 = rows["blip2_two_stage"]["connector_macs_per_sample"][0]
    assert rows["blip2_two_stage"]["connector_macs_per_sample_budget_mean"] == (stage1 + 119_040) / 2
    assert rows["evlgen"]["ratio_to_evlgen"]["train_seconds"] == 1.0
    two = rows["blip2_two_stage"]
    assert two["train_seconds"] == pytest.approx(runs["blip2_stage1"]["train_seconds"]
                                                 + runs["blip2_stage2_after_stage1"]["train_seconds"])
    assert two["trainable_params"] == [runs["blip2_stage1"]["trainable_params"],
                                       runs["blip2_stage2_after_stage1"]["trainable_params"]]
    table = (out / "comparison.md").read_text()
    assert "| EVLGen (single stage) | 0.02M | 311.42 k |" in table and "Ratios to EVLGen" in table
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Stage 2 of the two-stage method started from stage 1's checkpoint.
    stage2_cfg = (out / "configs" / "blip2_stage2_after_stage1.yaml").read_text()
    assert str(out / "runs" / "blip2_stage1" / "checkpoint_latest.pth") in stage2_cfg
    assert (out / "runs" / "blip2_stage1" / "checkpoint_latest.pth").is_file()
    assert "comparison.md" in capsys.readouterr().out


def test_bad_configs_are_named(tmp_path, capsys):
    assert compare.main(["--cfg-path", str(tmp_path / "none.yaml")]) == 2
    assert "--cfg-path" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"compare\.steps"):
        compare.load_config(CONFIG, ["compare.steps=1"])
    with pytest.raises(ConfigError, match=r"compare\.stage1_share"):
        compare.load_config(CONFIG, ["compare.steps=4", "compare.stage1_share=0.95"])
    with pytest.raises(ConfigError, match=r"methods\.blip2_stage1\.model\.arch"):
        compare.load_config(CONFIG, ["methods.blip2_stage1.model.arch=evlgen_opt"])
    cfg = compare.load_config(CONFIG, ["methods.blip2_stage2.model.model_type=tiny"])
    with pytest.raises(ConfigError, match=r"methods\.blip2_stage2\.model\.vision"):
        compare.shared_vision(cfg)
