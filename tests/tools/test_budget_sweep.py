"""budget_sweep: one checkpoint captioned and scored at each final token count asked for."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lavis_evlgen.common.checkpoint import atomic_save, trainable_state_dict
from lavis_evlgen.tools.budget_sweep import budgets, main
from lavis_evlgen.tools.demo import load_demo
from tests.tools.test_demo import _config


def test_tokens_argument():
    assert budgets("9,17,29") == [9, 17, 29]
    with pytest.raises(Exception, match="--tokens"):
        budgets("9,x")
    with pytest.raises(Exception, match="at least 1"):
        budgets("0,5")


def test_sweep_of_a_tiny_checkpoint_scores_every_budget(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("EVLGEN_CACHE", str(tmp_path / "cache"))
    cfg_path = _config(tmp_path)
    demo, _ = load_demo(cfg_path, untrained=True)
    with torch.no_grad():
        demo.model.proj2.weight.normal_(generator=torch.Generator().manual_seed(1))
    checkpoint = tmp_path / "checkpoint_best.pth"
    atomic_save({"model": trainable_state_dict(demo.model)}, checkpoint)

    out = tmp_path / "sweep"
    assert main(["--cfg-path", str(cfg_path), "--checkpoint", str(checkpoint), "--tokens", "5,11",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    assert [b["tokens"] for b in summary["budgets"]] == [5, 11]
    assert [b["schedule"] for b in summary["budgets"]] == ["5 tokens", "11 tokens"]
    saved = json.loads((out / "budget_sweep.json").read_text())["budgets"]
    for row in saved:
        assert row["grounding"]["images"] == len(row["captions"]) == 3       # every test image captioned
        assert 0.0 <= row["test_cider"] and 0.0 <= row["held_out_cider"]
        assert (out / f"test_{row['tokens']}.json").is_file()

    with pytest.raises(SystemExit):
        main(["--cfg-path", str(cfg_path), "--checkpoint", str(tmp_path / "missing.pth")])
    assert "--checkpoint: no file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--cfg-path", str(cfg_path), "--checkpoint", str(checkpoint), "--tokens", "3"])
    assert "--tokens: cannot reach 3 tokens" in capsys.readouterr().err
