"""The comparison tool end to end on random tiny parts and a very small budget: the lr sweep, three seeds per
method, validation curves, the report, and a comparison stopped part-way then continued by rerunning it."""
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch.distributed as dist
import yaml

from lavis_evlgen.tools import compare, compare_report

REPO = Path(__file__).resolve().parents[2]
CONFIG = "projects/compare/embedded.yaml"


def tiny_options(tmp_path):
    gen = "datasets.shapes_caption.build_info.generate"
    return ["compare.model_type=tiny", "compare.vision={}", "compare.steps=4", "compare.eval_every=2",
            "compare.seeds=[1,2]", "methods.blip2_stage2_only=null",  # a single stage like EVLGen's: left out
            "compare.sweep.lrs=[1.0e-4,3.0e-4]", "compare.sweep.steps=2", "methods.blip2_two_stage.lr=1.0e-4",
            "compare.target_cider=0.0", "compare.paper_scale=null", "compare.step_cost.steps=2",
            "compare.step_cost.warmup=0",
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


def test_compare_tiny_stops_resumes_and_reports(tmp_path, capfd):
    """Every run trains in a process of its own: its log reaches this one's stderr."""
    options = tiny_options(tmp_path)
    out = tmp_path / "out"
    # Stopped after the first optimizer step (a deadline already passed): the first run has a checkpoint, no result.
    assert compare.main(["--cfg-path", CONFIG, "--options", *options, "compare.stop_after_minutes=0"]) == 3
    first = out / "sweep" / "evlgen" / "lr0.0001" / "caption"
    assert (first / "checkpoint_latest.pth").is_file() and not (first / "result.json").exists()
    assert list(json.loads((first / "clock.json").read_text())) == ["1"]
    assert "rerun the same command to continue" in capfd.readouterr().err

    assert compare.main(["--cfg-path", CONFIG, "--options", *options]) == 0
    resumed = [line for line in capfd.readouterr().err.splitlines() if " resumed from " in line]
    assert len(resumed) == 1 and str(first) in resumed[0] and resumed[0].endswith("at iteration 1")
    report = json.loads((out / "comparison.json").read_text())
    methods = report["methods"]
    assert list(methods) == ["evlgen", "blip2_two_stage"]
    # The sweep chose EVLGen's lr by the rule; the others were fixed in the config.
    sweep = methods["evlgen"]["lr"]
    assert sorted(sweep["final_val_cider"]) == ["0.0001", "0.0003"]
    best = max(sweep["final_val_cider"].items(), key=lambda kv: (kv[1], -float(kv[0])))
    assert sweep["lr"] == float(best[0])
    assert methods["blip2_two_stage"]["lr"]["how"].startswith("fixed")
    for name, summary in methods.items():
        assert set(summary["runs"]) == {"1", "2"}
        for run in summary["runs"].values():
            points = run["points"]
            # Captioning stages validate every 2 steps and at their end; 4 steps split 250 : 80 give BLIP-2's
            # stage 1 three steps and stage 2 one.
            expected = [4] if name == "blip2_two_stage" else [2, 4]
            assert [p["steps"] for p in points] == expected, name
            assert all(0 <= p["cider"] and p["train_seconds"] > 0 for p in points)
            assert points[-1]["grounding"]["images"] == 2
            assert "CIDEr" in run["test"]["test"]
        assert summary["final_val_cider"]["n"] == 2
        # compare.target_cider 0: every seed reaches it at its first point.
        fixed = summary["to_target"]["fixed"]
        assert fixed["steps_spread"]["n"] == 2 and fixed["steps_spread"]["mean"] == (4 if "two" in name else 2)
    # The two-stage method's first point comes after stage 1's steps, and its time includes stage 1's.
    two = methods["blip2_two_stage"]["runs"]["1"]
    assert two["points"][0]["train_seconds"] > two["stages"]["stage1"]["train_seconds"]
    # Connector MACs to the target include stage 1's: 3 steps x batch 4 x its MACs/sample, then stage 2's.
    stage1, stage2 = (s["connector_macs_per_sample"] for s in methods["blip2_two_stage"]["stages"])
    assert stage2 == 119_040 and methods["evlgen"]["stages"][0]["connector_macs_per_sample"] == 311_424
    assert methods["blip2_two_stage"]["to_target"]["fixed"]["connector_macs"]["1"] == 3 * 4 * stage1 + 1 * 4 * stage2
    table = (out / "comparison.md").read_text()
    assert "## Time to val CIDEr 0.0 (a fixed target)" in table and "## Differences between methods" in table
    # Every pair of methods is compared on quality and on steps and seconds to the reference's quality.
    assert [(v["method"], v["other"]) for v in report["verdicts"]] == [("evlgen", "blip2_two_stage")] * 5
    steps = next(v for v in report["verdicts"] if v["what"].startswith("steps"))
    assert (steps["method_mean"], steps["other_mean"]) == (
        methods["evlgen"]["to_target"]["reference"]["steps_spread"]["mean"],
        methods["blip2_two_stage"]["to_target"]["reference"]["steps_spread"]["mean"])
    assert [v["scale"] for v in report["verdicts"]] == [100, 100, 1, 1, 1]  # CIDEr x100, steps and seconds as they are
    steps_line = next(line for line in table.splitlines() if "steps to the reference" in line)
    assert (f"({compare_report._mean_text(steps['method_mean'], 1)} vs "
            f"{compare_report._mean_text(steps['other_mean'], 1)})") in steps_line
    # Every stage's step timed in turns; times to a target re-read at those costs, stage by stage.
    costs = report["step_cost"]["stages"]
    assert set(costs) == {"evlgen/caption", "blip2_two_stage/stage1", "blip2_two_stage/stage2"}
    assert all(c["steps"] == 2 and c["median"] > 0 for c in costs.values())
    assert len(report["step_cost"]["seconds"]["evlgen/caption"]) == 2
    assert methods["blip2_two_stage"]["to_target"]["fixed"]["cost_seconds"]["1"] == pytest.approx(
        3 * costs["blip2_two_stage/stage1"]["median"] + 1 * costs["blip2_two_stage/stage2"]["median"])
    assert methods["evlgen"]["budget_seconds_at_step_cost"] == pytest.approx(4 * costs["evlgen/caption"]["median"])
    assert "## Step cost, timed in turns in one process" in table and "time at the step costs (s)" in table
    assert (out / "cider_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [c["seconds"] is not None for c in report["commands"]] == [True, True]

    # Rerunning a finished comparison trains nothing: every run's result is kept as it was.
    results = sorted(out.rglob("result.json"))
    assert len(results) == 2 * 1 + 2 * 3  # sweep: EVLGen at 2 lrs; runs: 2 seeds x (1 + 2 stages)
    results.append(out / "step_cost.json")  # timed once
    stamps = [p.stat().st_mtime_ns for p in results]
    # Seed-major: every method under seed 1 finished before any run under seed 2 began.
    runs = out / "runs"
    assert ((runs / "blip2_two_stage" / "seed1" / "stage2" / "result.json").stat().st_mtime_ns
            < (runs / "evlgen" / "seed2" / "caption" / "result.json").stat().st_mtime_ns)
    assert compare.main(["--cfg-path", CONFIG, "--options", *options]) == 0
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert len(json.loads((out / "comparison.json").read_text())["commands"]) == 3
    # Every run names the CPU it trained on, and a comparison continued on another CPU says so.
    assert {json.loads(p.read_text())["cpu"] for p in results[:-1]} == {compare.cpu_model()}
    ledger = json.loads((out / "commands.json").read_text())
    ledger[0]["machine"]["cpu"] = "Another CPU (family 1, model 1)"
    (out / "commands.json").write_text(json.dumps(ledger))
    assert compare.main(["--cfg-path", CONFIG, "--options", *options]) == 0
    report = (out / "comparison.md").read_text()
    assert "The commands ran on 2 CPUs (" in report and "Another CPU (family 1, model 1)" in report


def test_paper_scale_ratios_come_from_the_macs_tool(tmp_path):
    configs = {}
    for name, arch, steps in (("s1", "blip2_stage1", 5), ("s2", "blip2_stage2_llama", 2), ("e", "evlgen_opt", 3)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"model": {"arch": arch, "model_type": "tiny"},
                                        "run": {"max_iters": steps, "batch_size_train": 2}}))
        configs[name] = str(path)
    schedules = compare.OmegaConf.create({"two-stage": [configs["s1"], configs["s2"]], "one": [configs["e"]]})
    result = compare.paper_scale(schedules, tmp_path)
    per = result["per_config"]
    two = per[configs["s1"]]["macs_per_sample"] * 2 * 5 + 119_040 * 2 * 2
    assert result["schedules"]["two-stage"]["connector_macs_forward"] == two
    assert result["schedules"]["one"]["ratio_to_first"] == pytest.approx(311_424 * 2 * 3 / two)
    assert json.loads((tmp_path / "paper_scale.json").read_text())["schedules"] == result["schedules"]


def test_bad_configs_are_named(tmp_path, capsys):
    assert compare.main(["--cfg-path", str(tmp_path / "none.yaml")]) == 2
    assert "--cfg-path" in capsys.readouterr().err
    assert compare.main(["--cfg-path", CONFIG, "--options",
                         "methods.blip2_stage2_only.stages.stage2.model.model_type=tiny"]) == 2
    assert "methods.blip2_stage2_only.stages.stage2.model.vision: differs" in capsys.readouterr().err


def test_a_preemption_signal_to_the_command_asks_the_run_to_stop():
    """The run's process is asked once (it may have had the signal itself, as from a job scheduler), not killed."""
    context = multiprocessing.get_context("spawn")
    stop, child = context.Event(), context.Process(target=time.sleep, args=(60,))
    child.start()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with compare._stop_requests(stop, child):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5) and child.is_alive()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        child.kill()
        child.join()


def test_means_in_verdicts_are_shown_at_their_scale():
    assert compare_report._mean_text(0.7994, 100) == "79.9"
    assert compare_report._mean_text(216.7, 1) == "217"
    assert compare_report._mean_text(float("nan"), 100) == "not reached"


def test_points_are_placed_at_their_stages_step_costs():
    summary = {"stages": [{"name": "stage1", "steps": 3}, {"name": "stage2", "steps": 2}]}
    points = [{"steps": 4, "train_seconds": 9.0}, {"steps": 5, "train_seconds": 11.0}]
    cost = {"stages": {"m/stage1": {"median": 2.0}, "m/stage2": {"median": 0.5}}}
    assert compare_report.point_seconds("m", summary, points, None) == [9.0, 11.0]
    assert compare_report.point_seconds("m", summary, points, cost) == [6.5, 7.0]
