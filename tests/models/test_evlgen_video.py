"""EVLGen-Video models: identity with the image model, aggregation modes, checkpoints, frame order (tiny, CPU)."""
import json
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen
from lavis_evlgen.common.config_check import check_config
from lavis_evlgen.models.weights import MissingWeightsError
from lavis_evlgen.runners.launch import main

torch.set_num_threads(1)
ARCHS = {"evlgen_video_opt": "evlgen_opt", "evlgen_video_vicuna": "evlgen_vicuna"}
AGGREGATIONS = ["temporal+mean", "mean", "concat"]


def tiny_cfg(name, **overrides):
    cfg = OmegaConf.load(registry.get_model_class(name).default_config_path("tiny")).model
    return OmegaConf.merge(cfg, overrides)


def build(name, seed=0, **overrides):
    torch.manual_seed(seed)
    return registry.get_model_class(name).from_config(tiny_cfg(name, **overrides))


def image_model(video_name, seed=0):
    """The image model the video model extends, built from the same config and seed."""
    torch.manual_seed(seed)
    cfg = tiny_cfg(video_name)
    cfg.arch = ARCHS[video_name]
    return registry.get_model_class(ARCHS[video_name]).from_config(cfg)


def clips(n=2, frames=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, frames, 32, 32, generator=g)


CAPTIONS = ["a red circle moves left", "a blue square moves up"]


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_identical_frames_give_the_image_models_prompt_and_loss(name, aggregation):
    """At initialisation the video model on a still clip is the image model on its frame."""
    video_model = build(name, frame_aggregation=aggregation).eval()
    ref = image_model(name).eval()
    images = torch.randn(2, 3, 32, 32)
    still = images.unsqueeze(2).repeat(1, 1, 4, 1, 1)  # [B, C, N, H, W]
    with torch.no_grad():
        expected, expected_atts = ref.encode_image({"image": images})
        got, got_atts = video_model.encode_image({"video": still})
        if aggregation == "concat":
            expected, expected_atts = expected.repeat(1, 4, 1), expected_atts.repeat(1, 4)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(got_atts, expected_atts)
        if aggregation != "concat":
            torch.testing.assert_close(video_model({"video": still, "text_input": CAPTIONS})["loss"],
                                       ref({"image": images, "text_input": CAPTIONS})["loss"], rtol=1e-5, atol=1e-6)
        # images through the video model: exactly the image model
        assert torch.equal(video_model.encode_image({"image": images})[0], ref.encode_image({"image": images})[0])


def test_images_skip_the_temporal_modules_even_right_after_a_clip():
    model, ref = build("evlgen_video_opt").eval(), image_model("evlgen_video_opt").eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        for m in model.temporal:
            m.gate.fill_(1.0)
        model.encode_image({"video": clips(n=1, frames=4)})
        assert torch.equal(model.vision_features(images), ref.vision_features(images))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_a_few_training_steps_of_each_aggregation(aggregation):
    model = build("evlgen_video_opt", frame_aggregation=aggregation)
    model.train()
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    expected = {"ln_vision", "proj1", "tomeformer", "proj2"}
    expected |= {"temporal"} if aggregation == "temporal+mean" else set()
    assert trainable == expected
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    samples = {"video": clips(), "text_input": CAPTIONS}
    losses = []
    for _ in range(8):
        loss = model(samples)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n
    if aggregation == "temporal+mean":
        assert all(m.gate.item() != 0 for m in model.temporal)
    captions = model.generate({"video": clips()}, num_beams=1, max_length=5)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_concat_prompt_is_the_frames_prompts_in_order():
    model = build("evlgen_video_opt", frame_aggregation="concat").eval()
    video = clips(n=1, frames=3)
    with torch.no_grad():
        embeds, atts, source = model.encode_image({"video": video}, return_source=True)
        per_frame = [model.encode_image({"image": video[:, :, i]})[0] for i in range(3)]
    tokens = per_frame[0].size(1)
    assert embeds.shape == (1, 3 * tokens, 32) and atts.shape == (1, 3 * tokens)
    assert source.shape[:3] == (1, 3, tokens)
    torch.testing.assert_close(embeds, torch.cat(per_frame, dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("positions", [0, 4])
def test_reversing_a_clip_changes_the_prompt_only_with_frame_positions(positions):
    model = build("evlgen_video_opt", temporal={"frame_positions": positions}).eval()
    with torch.no_grad():
        for m in model.temporal:
            m.gate.fill_(1.0)
        video = clips()
        forward = model.encode_image({"video": video})[0]
        backward = model.encode_image({"video": video.flip(2)})[0]
    if positions:
        assert (forward - backward).abs().max() > 1e-3
    else:
        torch.testing.assert_close(forward, backward, rtol=1e-4, atol=1e-5)


def test_image_checkpoint_initialises_the_image_parts(tmp_path):
    ref = image_model("evlgen_video_opt", seed=1)
    path = tmp_path / "image.pth"
    torch.save({"model": {n: p for n, p in ref.state_dict().items() if n.split(".")[0] in ref.TRAINABLE_PARTS}},
               path)
    model = build("evlgen_video_opt", seed=2, image_checkpoint=str(path))
    for part in ("proj1", "proj2", "tomeformer", "ln_vision"):
        for (n, a), b in zip(getattr(model, part).state_dict().items(), getattr(ref, part).state_dict().values()):
            assert torch.equal(a, b), f"{part}.{n}"
    assert all(m.gate.item() == 0 for m in model.temporal)
    # an image checkpoint is not a video checkpoint: the temporal modules would be missing
    with pytest.raises(ValueError, match="temporal"):
        build("evlgen_video_opt", finetuned=str(path))
    with pytest.raises(MissingWeightsError, match="model.image_checkpoint"):
        build("evlgen_video_opt", image_checkpoint=str(tmp_path / "absent.pth"))


def test_video_checkpoint_round_trip(tmp_path):
    """Trained weights (here: perturbed) come back into a model built from the same config and seed."""
    model = build("evlgen_video_opt", seed=3, temporal={"frame_positions": 4})
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "video.pth"
    torch.save({"model": {n: p for n, p in model.named_parameters() if p.requires_grad}}, path)
    fresh = build("evlgen_video_opt", seed=3, temporal={"frame_positions": 4})
    loaded = build("evlgen_video_opt", seed=3, temporal={"frame_positions": 4}, finetuned=str(path))
    assert not torch.equal(fresh.temporal[0].gate, model.temporal[0].gate)
    for (n, a), b in zip(loaded.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), n
    video = clips()
    loaded.eval(), model.eval()  # the TomeFormer has dropout
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image({"video": video})[0], model.encode_image({"video": video})[0])


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="model.frame_aggregation"):
        build("evlgen_video_opt", frame_aggregation="max")
    with pytest.raises(ValueError, match="frame_positions"):
        build("evlgen_video_opt", frame_aggregation="mean", temporal={"frame_positions": 4})
    with pytest.raises(ValueError, match="use_features"):
        build("evlgen_video_opt", use_features=True, vision={"width": 32})
    model = build("evlgen_video_opt")
    with pytest.raises(ValueError, match=r"\[B, C, N, H, W\]"):
        model.encode_image({"video": torch.randn(2, 3, 32, 32)})


def test_load_model_and_preprocess_gives_video_processors():
    model, vis, _ = lavis_evlgen.load_model_and_preprocess("evlgen_video_vicuna", "tiny")
    assert type(vis["eval"]).__name__ == "AlproVideoEvalProcessor" and vis["eval"].n_frms == 4
    assert model.frame_aggregation == "temporal+mean" and len(model.temporal) == 2


# EVA-ViT-g temporal modules: 39 blocks x (W_q, W_k: 1408 -> 256 with biases, one gate) = 28,134,951.
TEMPORAL_EVA_G = 39 * (2 * (1408 * 256 + 256) + 1)


@pytest.mark.parametrize("name,model_type,image_trainable", [
    ("evlgen_video_opt", "video_opt2.7b", 88_504_320),
    ("evlgen_video_vicuna", "video_vicuna7b", 88_504_320 + (768 + 1) * (4096 - 2560)),  # wider f_proj2
])
def test_paper_types_build_as_skeletons(name, model_type, image_trainable):
    cls = registry.get_model_class(name)
    cfg = OmegaConf.load(cls.default_config_path(model_type)).model
    cfg.vision.weights, cfg.tomeformer.bert, cfg.llm.path, cfg.llm.tokenizer = None, None, None, "byte"
    cfg.image_checkpoint = None
    with init_empty_weights():
        model = cls.from_config(cfg)
    assert len(model.temporal) == 39 and TEMPORAL_EVA_G == 28_134_951
    assert model.trainable_parameters() == image_trainable + TEMPORAL_EVA_G


def test_a_reversed_clip_gets_the_same_caption_only_without_frame_positions():
    """The paper's module then an average over frames: a clip and its reverse share one visual prompt."""
    video = clips(n=4, frames=4, seed=5)
    for positions in (0, 4):
        model = build("evlgen_video_opt", temporal={"frame_positions": positions}).eval()
        with torch.no_grad():
            for m in model.temporal:
                m.gate.fill_(1.0)
            forward = model.generate({"video": video}, num_beams=1, max_length=6)
            backward = model.generate({"video": video.flip(2)}, num_beams=1, max_length=6)
            prompts = model.encode_image({"video": video})[0], model.encode_image({"video": video.flip(2)})[0]
        if positions:
            assert (prompts[0] - prompts[1]).abs().max() > 1e-3
        else:
            assert forward == backward


# ------------------------------------------------------------------ project configs
PROJECT = Path(__file__).resolve().parents[2] / "projects/evlgen_video"


def aggregation_of(name: str) -> str:
    return "mean" if name.endswith("_mean") else "concat" if name.endswith("_concat") else "temporal+mean"


def test_project_configs_are_valid_and_consistent():
    train = sorted((PROJECT / "train").glob("*.yaml"))
    evals = sorted((PROJECT / "eval").glob("*.yaml"))
    assert {p.stem for p in train} >= {f"caption_{d}_opt2.7b{v}" for d in ("msrvtt", "msvd")
                                       for v in ("", "_mean", "_concat", "_from_webvid", "_scst")}
    assert {"pretrain_webvid2m_opt2.7b", "quickstart_video"} <= {p.stem for p in train}
    for path in train + evals:
        cfg = OmegaConf.load(path)
        check_config(cfg, evaluate_only=path in evals)
        assert cfg.model.arch == ("evlgen_video_vicuna" if "quickstart_video" in path.stem else "evlgen_video_opt")
        assert cfg.model.frame_aggregation == aggregation_of(path.stem), path.name
        assert cfg.run.runner == "runner_evlgen"
        dataset = next(iter(cfg.datasets.values()))
        for processor in dataset.vis_processor.values():
            assert processor.name.startswith("alpro_video_") and processor.n_frms == 4, path.name
        if path.stem.endswith("_scst"):
            assert cfg.run.task == "evlgen_scst" and cfg.model.finetuned and cfg.model.image_checkpoint is None
        elif path.stem.endswith("_from_webvid"):
            assert cfg.model.pretrained and cfg.model.image_checkpoint is None
        elif path in evals:
            assert cfg.run.evaluate and cfg.model.finetuned and list(cfg.run.test_splits) == ["test"]
    for path in evals:  # the authors' evaluation settings, as the fine-tuning configs validate with
        cfg = OmegaConf.load(path)
        assert (cfg.run.num_beams, cfg.run.max_len, cfg.run.min_len) == (5, 20, 5)


def test_quickstart_video_runs_a_few_steps_on_the_embedded_parts(tmp_path, monkeypatch):
    """projects/evlgen_video/train/quickstart_video.yaml as it is (real DINOv2 + SmolLM2), shortened."""
    from lavis_evlgen.embedded import prepare_embedded

    prepare_embedded()
    options = ["run.max_iters=2", "run.iters_per_inner_epoch=2", "run.warmup_steps=1", "run.batch_size_train=2",
               "run.batch_size_eval=2", "run.max_len=4", f"run.output_dir={tmp_path / 'out'}", "run.job_id=qs",
               f"datasets.moving_shapes_caption.build_info.root={tmp_path}",
               "datasets.moving_shapes_caption.build_info.generate.n_train=4",
               "datasets.moving_shapes_caption.build_info.generate.n_val=2",
               "datasets.moving_shapes_caption.build_info.generate.n_test=2"]
    monkeypatch.chdir(tmp_path)
    assert main(["--cfg-path", str(PROJECT / "train/quickstart_video.yaml"), "--options", *options],
                evaluate_only=False) == 0
    lines = (tmp_path / "out/qs/log.txt").read_text().splitlines()
    stats = {k: v for line in lines if line.startswith('{"') for k, v in json.loads(line).items()}
    assert stats["train_iteration"] == 2 and stats["train_skipped_samples"] == 0
    assert "test_CIDEr" in stats and (tmp_path / "out/qs/result/test_best.json").exists()


@pytest.mark.parametrize("aggregation", ["mean", "concat"])
def test_a_question_conditions_every_frames_merging(aggregation):
    """With model.tomeformer.condition, a still clip asked a question gets the image model's prompt for its frame
    asked the same question: the clip's question reaches the TomeFormer of each frame."""
    from tests.models.test_tomeformer import minilm_path

    tomeformer = {"bert": str(minilm_path()), "num_layers": 2, "r": 2, "condition": True}
    video_model = build("evlgen_video_opt", frame_aggregation=aggregation, tomeformer=tomeformer).eval()
    torch.manual_seed(0)
    cfg = tiny_cfg("evlgen_video_opt", tomeformer=tomeformer)
    cfg.arch = "evlgen_opt"
    ref = registry.get_model_class("evlgen_opt").from_config(cfg).eval()
    images = torch.randn(2, 3, 32, 32)
    still = images.unsqueeze(2).repeat(1, 1, 3, 1, 1)
    questions = ["what colour is it?", "how many shapes are there?"]
    with torch.no_grad():
        expected = ref.encode_image({"image": images, "condition_text": questions})[0]
        got = video_model.encode_image({"video": still, "condition_text": questions})[0]
        other = video_model.encode_image({"video": still, "condition_text": questions[::-1]})[0]
    if aggregation == "concat":
        expected = expected.repeat(1, 3, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, other, atol=1e-4)
    with pytest.raises(ValueError, match="condition_text"):
        video_model.encode_image({"video": still})
