"""The fault drill, small: five single-process scenarios with two faults each over six iterations.

Each scenario kills (or signals) real training processes at random moments, relaunches the same
command (``run.auto_resume``) and compares the final parameters with an uninterrupted run. The
two-process scenario (``kill-2proc``, minutes here) and ``broken`` (images) run from the command line;
exact two-process resume and skipped images are tested in tests/runners/test_runner_evlgen.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMALL = ["kill", "preempt", "corrupt", "broken-video", "webdataset"]


def test_fault_drill_resumes_exactly_after_every_fault(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "lavis_evlgen.tools.fault_drill", "--scenarios", ",".join(SMALL),
                           "--faults", "2", "--iters", "6", "--seed", "1", "--workdir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    outcomes = {o["scenario"]: o for o in json.loads((tmp_path / "drill.json").read_text())}
    assert sorted(outcomes) == sorted(SMALL)
    for name, o in outcomes.items():
        assert o["faults"] == 2 and o["resumes"] == 2, o
        assert o["max_difference"] <= 1e-6 and o["lost"] == 0 and not o["problems"], o
        assert o["skipped"] == o["skipped_reference"], o
    for name in ("broken-video", "webdataset"):
        assert outcomes[name]["skipped"] > 0, outcomes[name]
    assert "| scenario | faults injected (in a save) |" in proc.stdout and proc.stdout.count("| pass |") == len(SMALL)
