"""bench_step: the runner's step time and a breakdown whose parts add up, from images and cached features."""
import pytest

from lavis_evlgen.tools.bench_step import PARTS, Spread, main
from tests.runners.tiny_run import experiment, write_caption_data, write_experiment


def _config(tmp_path, **run):
    data = write_caption_data(tmp_path / "data", n_train=6)
    return write_experiment(tmp_path / "exp.yaml", experiment(data, tmp_path / "out", **run))


def test_breakdown_from_images_and_cached_features(tmp_path, capsys):
    cfg = _config(tmp_path, feature_cache=True, feature_cache_dir=str(tmp_path / "features"), max_grad_norm=1.0)
    result = main(["--cfg-path", str(cfg), "--steps", "3", "--warmup", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert result.batch_size == 2 and result.step.count == 3 and result.step.median > 0
    assert set(result.parts) == {"images", "features"}
    assert result.parts["images"]["ViT"] > 0 and result.parts["features"]["ViT"] == 0
    for source in ("images", "features"):
        parts = result.parts[source]
        assert set(parts) == set(PARTS)
        for part in ("connector forward", "LLM forward", "LLM backward", "connector backward", "optimizer"):
            assert parts[part] > 0, (source, part)
        assert result.totals[source].low <= result.totals[source].median <= result.totals[source].high
    assert "training step (runner.train_step, cached features): median" in out
    assert "precision: fp32 on cpu" in out
    assert "a step from images takes" in out and "x a step from cached features" in out
    assert not list((tmp_path / "out").glob("**/*")), "the runner wrote outside its temporary folder"


def test_without_cache_times_images_only(tmp_path, capsys):
    result = main(["--cfg-path", str(_config(tmp_path)), "--steps", "2", "--warmup", "0"])
    assert list(result.parts) == ["images"]
    assert "from cached features" not in capsys.readouterr().out


def test_spread_needs_two_steps():
    assert Spread.of([3.0, 1.0, 2.0, 4.0]).median == 2.5
    with pytest.raises(ValueError, match="--steps"):
        Spread.of([1.0])
