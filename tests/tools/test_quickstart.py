"""A few-step quickstart run writes its pictures, captions and metrics (real embedded parts, CPU)."""
import json
import subprocess
import sys

from lavis_evlgen.common.paths import REPO_ROOT
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
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
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
    assert [json.loads(line)["iteration"] for line in (run / "train_loss.jsonl").read_text().splitlines()] == [1, 2]
