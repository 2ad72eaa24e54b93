"""A built wheel works without the repository: configs are package data, the cache defaults to the home folder."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import sys
import lavis_evlgen
from lavis_evlgen.common.paths import cache_dir, in_repository
assert lavis_evlgen.__file__.startswith(sys.argv[1]), lavis_evlgen.__file__
model, vis, txt = lavis_evlgen.load_model_and_preprocess("evlgen_opt", "tiny", is_eval=True, device="cpu")
import torch
caption = model.generate({"image": torch.zeros(1, 3, 32, 32)}, num_beams=1, max_length=3)
print(in_repository(), cache_dir(), type(model).__name__, len(caption))
"""


def test_wheel_installs_and_loads_a_model_from_any_folder(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(REPO / "lavis_evlgen", source / "lavis_evlgen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("lavis_evlgen-*.whl")
    site = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    assert len(list((site / "lavis_evlgen" / "configs").rglob("*.yaml"))) == len(
        list((REPO / "lavis_evlgen" / "configs").rglob("*.yaml")))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "EVLGEN_CACHE"}
    env.update(PYTHONPATH=str(site), HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", str(tmp_path / "home" / ".cache" / "lavis_evlgen"), "EVLGenOPT", "1"]
