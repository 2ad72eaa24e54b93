"""Threshold calibration: the thresholds it finds give the target mean token count, on the tiny model too."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from transformers import BertConfig

from lavis_evlgen.models.tomeformer import TomeFormer
from lavis_evlgen.tools.calibrate_merging import calibrate_thresholds, main, summary
from tests.models.test_tomeformer import SMALL

LAYERS = 4


def small_tomeformer(r: int) -> TomeFormer:
    torch.manual_seed(0)
    return TomeFormer.from_config(BertConfig(**{**SMALL, "num_hidden_layers": LAYERS}), r).eval()


def _images(seed=0):
    """Three batches of 65 tokens mixing busy (random) and simple (few repeated tokens) images."""
    torch.manual_seed(seed)
    batches = []
    for _ in range(3):
        busy = torch.randn(4, 65, 32)
        kinds = int(torch.randint(2, 6, ()))
        simple = torch.randn(4, kinds, 32).repeat_interleave(-(-65 // kinds), dim=1)[:, :65]
        simple = simple + 0.1 * torch.randn_like(simple)
        batches.append((torch.cat([busy, simple]), None))
    return batches


@pytest.mark.parametrize("target", [9, 29])
def test_calibrated_thresholds_hit_the_target_mean_and_spread_the_counts(target):
    model = small_tomeformer(r=4)
    batches = _images()
    caps, thresholds = calibrate_thresholds(model, batches, target)
    assert len(caps) == len(thresholds) == LAYERS
    assert model.r_per_layer == [4] * LAYERS and model.thresholds is None        # the model's schedule is restored
    model.set_merge_schedule(r=caps, threshold=thresholds)
    counts = summary(model, batches)
    assert abs(counts["mean"] - target) <= 1.0
    assert counts["max"] > counts["min"]                                    # simple and busy images differ


def test_calibration_errors():
    model = small_tomeformer(r=4)
    with pytest.raises(ValueError, match="one token count"):
        calibrate_thresholds(model, [(torch.randn(1, 20, 32), None), (torch.randn(1, 21, 32), None)], 9)
    with pytest.raises(ValueError, match="cap-factor"):
        calibrate_thresholds(model, _images(), 9, cap_factor=0.5)


def test_command_on_the_tiny_model_writes_values_that_load(tmp_path: Path, capsys):
    from tests.tools.test_demo import _config

    cfg_path = _config(tmp_path)
    out = tmp_path / "thresholds.yaml"
    assert main(["--cfg-path", str(cfg_path), "--target-tokens", "11", "--images", "4", "--batch-size", "2",
                 "--out", str(out)]) == 0
    values = yaml.safe_load(out.read_text())["model"]["tomeformer"]
    assert len(values["r"]) == len(values["threshold"]) == 2
    assert "tokens per image with these values" in capsys.readouterr().out
    options = [f"model.tomeformer.r={values['r']}", f"model.tomeformer.threshold={values['threshold']}"]
    from lavis_evlgen.tools.demo import load_demo

    demo, _ = load_demo(cfg_path, untrained=True, options=options)
    assert demo.model.tomeformer.thresholds == values["threshold"]
    assert main(["--cfg-path", str(tmp_path / "nope.yaml"), "--target-tokens", "11"]) == 2
