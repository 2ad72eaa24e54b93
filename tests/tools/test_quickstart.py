"""A few-step quickstart run writes its pictures, captions and metrics (real embedded parts, CPU)."""
import json
import os
import subprocess
import sys

from lavis_evlgen.tools.quickstart import grounding


def test_grounding_counts_distinct_captions_and_exact_shape_phrases():
    scenes = [{"image_id": 1, "shapes": [{"size": "small", "color": "red", "kind": "circle"}]},
              {"image_id": 2, "shapes": [{"size": "large", "color": "blue", "kind": "star"},
                                         {"size": "small", "color": "green", "kind": "cross"}]},
              {"image_id": 3, "shapes": [{"size": "small", "color": "red", "kind": "star"}]}]
    captions = {1: "a small red circle on the left", 2: "a small red circle on the left",
                3: "a large red star at the top"}
    assert grounding(scenes, captions) == {"images": 3, "distinct_captions": 2, "shapes": 4,
                                           "shapes_named_exactly": 1}


def test_quickstart_few_steps_writes_pictures_and_metrics(tmp_path):
    options = [
        "run.max_iters=2", "run.iters_per_inner_epoch=2", "run.warmup_steps=1", "run.batch_size_train=2",
        "run.max_len=4", f"run.output_dir={tmp_path / 'out'}", "run.job_id=qs",
        f"run.feature_cache_dir={tmp_path / 'features'}",
        f"datasets.shapes_caption.build_info.root={tmp_path / 'data'}",
        "datasets.shapes_caption.build_info.generate.n_train=8",
        "datasets.shapes_caption.build_info.generate.n_val=2",
        "datasets.shapes_caption.build_info.generate.n_test=4",
    ]
    proc = subprocess.run([sys.executable, "-m", "lavis_evlgen.tools.quickstart", "--options", *options],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, EVLGEN_INSTALL_SECONDS="7"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "out" / "qs"
    for picture in ("loss_curve.png", "merge_map.png"):
        assert (run / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("test", "test_held_out", "test_seen", "baseline_most_frequent_caption", "photos"):
        assert set(metrics[split]) >= {"CIDEr", "Bleu_4", "METEOR", "ROUGE_L"}, split
    captions = json.loads((run / "captions.json").read_text())
    assert len(captions["test"]) == 4 and len(captions["photos"]) == 17
    assert "held-out CIDEr" in proc.stdout
    assert metrics["test_grounding"]["images"] == 4 and "distinct captions" in proc.stdout
    phases = metrics["phase_seconds"]
    assert list(phases)[:5] == ["install", "weights", "data", "model build", "pictures"] and phases["install"] == 7
    assert {"model build and feature cache", "training (2 steps)", "validation and test",
            "captions and scores"} <= set(phases)
    assert abs(sum(phases.values()) - metrics["elapsed_seconds"]) < 0.5
    assert "time per phase:" in proc.stdout and "s/step)" in proc.stdout
    assert "lavis_evlgen.tools.demo" in proc.stdout and list(run.glob("events.out.tfevents.*"))
    assert [json.loads(line)["iteration"] for line in (run / "train_loss.jsonl").read_text().splitlines()] == [1, 2]


def test_training_seconds_reads_the_runner_stats_of_the_last_run(tmp_path):
    from lavis_evlgen.tools.quickstart import training_seconds

    log = tmp_path / "log.txt"
    config = json.dumps({"run": {"max_iters": 4}}, indent=4)
    stats = [{"train_iteration": 2, "train_seconds_per_iter": 9.0},
             {"train_iteration": 4, "train_seconds_per_iter": 9.0},
             {"train_iteration": 3, "train_seconds_per_iter": 1.5}, {"val_agg_metrics": 0.5},
             {"train_iteration": 5, "train_seconds_per_iter": 0.5}]
    log.write_text(config + "\n" + "\n".join(json.dumps(s) for s in stats) + "\n")
    assert training_seconds(log) == (3 * 1.5 + 2 * 0.5, 5)
