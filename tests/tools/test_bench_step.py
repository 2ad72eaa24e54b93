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


def test_attention_modes_take_turns_in_one_process(tmp_path, capsys):
    """Under CPU bf16 autocast each mode gets its spread and ratio; elsewhere the option says why it cannot run."""
    import torch

    from lavis_evlgen.common.precision import cpu_has_native_bf16

    cfg = _config(tmp_path, amp=True, amp_dtype="bf16")
    args = ["--cfg-path", str(cfg), "--steps", "2", "--warmup", "0", "--attention", "bf16_flash,bf16"]
    if not cpu_has_native_bf16() or torch.cuda.is_available():
        with pytest.raises(ValueError, match="--attention: compares modes of CPU bf16 autocast"):
            main(args)
        return
    main(args)
    out = capsys.readouterr().out
    assert "run.cpu_bf16_attention=bf16_flash: median" in out and "1.00x bf16_flash" in out
    assert "run.cpu_bf16_attention=bf16: median" in out
    with pytest.raises(ValueError, match="unknown modes \\['fp8'\\]"):
        main(args[:-1] + ["bf16,fp8"])


def test_the_temporary_runs_log_file_goes_with_its_folder(tmp_path):
    """Logging after a benchmark must not write into its removed folder."""
    import logging

    main(["--cfg-path", str(_config(tmp_path)), "--steps", "2", "--warmup", "0"])
    assert not [h for h in logging.getLogger().handlers
                if isinstance(h, logging.FileHandler) and "bench_step_" in h.baseFilename]
    logging.getLogger("lavis_evlgen").warning("after the benchmark")


def test_work_per_part_adds_up_to_the_step_and_the_frozen_llm_computes_no_weight_gradients(tmp_path, capsys):
    """The counted FLOPs split as the clock does: their sum is one counted step's total, the frozen ViT has no
    backward, the optimizer no multiplies, and the frozen LLM's backward (input gradients only) costs about its
    forward, not twice it as it would with weight gradients."""
    from lavis_evlgen.tools import bench_step

    cfg = _config(tmp_path, feature_cache=True, feature_cache_dir=str(tmp_path / "features"))
    result = main(["--cfg-path", str(cfg), "--steps", "2", "--warmup", "0", "--threads", "1"])
    out = capsys.readouterr().out
    images, features = result.flops["images"], result.flops["features"]
    assert images["ViT"] > 0 and features["ViT"] == 0 and images["optimizer"] == features["optimizer"] == 0
    for part in ("connector forward", "LLM forward", "LLM backward", "connector backward"):
        assert images[part] == features[part] > 0, part
    assert 0.9 * images["LLM forward"] < images["LLM backward"] < 1.5 * images["LLM forward"]
    assert images["connector forward"] < images["connector backward"]          # weight and input gradients
    assert result.ceiling.flops_per_s > 0 and result.ceiling.dtype == "float32"
    assert "GFLOP/s" in out and "% of the ceiling" in out

    with bench_step.temporary_runner(bench_step.lavis_config(str(cfg), [])) as runner:
        model = runner.unwrap_dist_model(runner.model)
        batch = bench_step.image_batches(runner, 1, 0)[0]
        clock = bench_step.PartClock(model, runner.device)
        split = bench_step.counted_step(runner, model, batch, clock)
        with bench_step.flop_counter() as whole:
            bench_step.run_step(runner, model, batch, clock)
    assert sum(split.values()) == whole.get_total_flops() > 0


def test_cpu_attention_is_counted_as_torch_counts_gpu_attention():
    import torch
    import torch.nn.functional as F

    from lavis_evlgen.tools.bench_step import flop_counter

    q, k, v = (torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3))
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    forward = 2 * 2 * (2 * 4 * 16 * 16 * 8)          # q @ k^T and p @ v over [2, 4, 16, 8], 2 FLOPs a multiply-add
    assert counter.get_total_flops() == forward + 2.5 * forward           # backward: 5 products of that size
