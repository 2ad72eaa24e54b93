"""evlgen_caption_benchmark / evlgen_nocaps: per-domain scores agree with pycocoevalcap; SPICE note."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from lavis.common.registry import registry
from omegaconf import OmegaConf
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

import lavis_evlgen  # noqa: F401
from lavis_evlgen.tasks.caption_benchmark import CaptionBenchmarkTask, NoCapsTask
from lavis_evlgen.tasks.spice import SPICE_FILES, missing_spice_files, spice_note
from tests.datasets.benchmark_fixtures import NOCAPS, write_nocaps

PREDICTIONS = {0: "a dog running on grass", 1: "a cat on a couch", 2: "a red truck", 4: "a jellyfish in the sea",
               5: "a violin on a wooden table"}


def pycocoevalcap_scores(refs: dict, hyps: dict, corpora: dict[str, list[int]]) -> dict[str, dict]:
    """BLEU, METEOR, ROUGE-L, CIDEr of each corpus (a list of image ids), with pycocoevalcap's scorers
    called directly (PTB tokenisation is per caption, so one pass serves every corpus)."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in cs] for i, cs in refs.items()})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in hyps.items()})
    meteor = Meteor()
    scores = {}
    for corpus, ids in corpora.items():
        scores[corpus] = {}
        for scorer, names in ((Bleu(4), ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")), (meteor, ("METEOR",)),
                              (Rouge(), ("ROUGE_L",)), (Cider(), ("CIDEr",))):
            value, _ = scorer.compute_score({i: gts[i] for i in ids}, {i: res[i] for i in ids})
            scores[corpus].update(zip(names, value if isinstance(value, list) else [value]))
    return scores


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.mapping["paths"], "result_dir", str(tmp_path))
    monkeypatch.setitem(registry.mapping["paths"], "output_dir", str(tmp_path))
    monkeypatch.setenv("EVLGEN_SPICE_DIR", str(tmp_path / "no_spice"))
    return tmp_path


def make_task(name: str):
    cfg = SimpleNamespace(run_cfg=OmegaConf.create({"task": name}))
    return registry.get_task_class(name).setup_task(cfg=cfg)


def test_nocaps_domains_agree_with_pycocoevalcap(paths):
    captions = write_nocaps(paths)
    domains = {i: d for i, d, _, _ in NOCAPS}
    task = make_task("evlgen_nocaps")
    assert isinstance(task, NoCapsTask)
    task.gt_file = str(paths / "nocaps/annotations/nocaps_val_4500_captions.json")
    task.domains = domains
    results = paths / "val_eval.json"
    results.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in PREDICTIONS.items()]))
    metrics = task._report_metrics(eval_result_file=str(results), split_name="val", skipped=1)

    expected = pycocoevalcap_scores({i: captions[i] for i in PREDICTIONS}, PREDICTIONS,
                                    {"all": list(PREDICTIONS), "out": [4, 5]})
    for name, value in expected["out"].items():
        assert metrics[f"out-domain/{name}"] == pytest.approx(value, abs=1e-9)
    for name, value in expected["all"].items():
        assert metrics[name] == pytest.approx(value, abs=1e-9)
    assert metrics["in-domain/CIDEr"] != pytest.approx(metrics["out-domain/CIDEr"])
    assert (metrics["near-domain/images_scored"], metrics["near-domain/images_unscored"]) == (1, 1)
    assert (metrics["images_scored"], metrics["images_unscored"], metrics["skipped_samples"]) == (5, 1, 1)
    assert metrics["agg_metrics"] == pytest.approx(metrics["CIDEr"] + metrics["Bleu_4"])
    assert "SPICE" not in metrics and "SPICE not computed" in metrics["spice_note"]
    logged = json.loads((paths / "evaluate.txt").read_text().splitlines()[-1])["val"]
    assert set(logged) == {"overall", "in-domain", "near-domain", "out-domain"}
    assert logged["out-domain"]["CIDEr"] == metrics["out-domain/CIDEr"]


def test_nocaps_needs_domains(paths):
    task = make_task("evlgen_nocaps")
    task.domains = {}
    with pytest.raises(ValueError, match="no image domains"):
        task.groups([1, 2])
    assert isinstance(make_task("evlgen_caption_benchmark"), CaptionBenchmarkTask)
    assert make_task("evlgen_caption_benchmark").groups([3, 4]) == {"overall": [3, 4]}


def test_spice_resources_are_checked_file_by_file(tmp_path):
    assert missing_spice_files(tmp_path) == [str(tmp_path / name) for name in SPICE_FILES]
    for name in SPICE_FILES[:2]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"jar")
    missing = missing_spice_files(tmp_path)
    assert missing == [str(tmp_path / SPICE_FILES[2])]
    assert "stanford-corenlp-3.6.0-models.jar" in spice_note(missing) and "EVLGEN_SPICE_DIR" in spice_note(missing)
