"""CIDEr-D by hand and against pycocoevalcap; the SCST task's step, its config, and that it raises CIDEr."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml
from lavis.common.registry import registry
from omegaconf import OmegaConf
from pycocoevalcap.cider.cider import Cider

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.models.word_tokenizer import write_word_tokenizer
from lavis_evlgen.runners.launch import main
from lavis_evlgen.tasks.cider_d import CiderD, words
from lavis_evlgen.tasks.scst import SCSTCaptionTask

torch.set_num_threads(1)
LOG2 = math.log(2)


# ------------------------------------------------------------------ CIDEr-D
def test_cider_d_by_hand():
    """Two images, one reference each: every n-gram has df 1, so every tf-idf weight is log(2) * tf."""
    cider = CiderD({"A": ["a b"], "B": ["c d"]})
    # exact match: cosine 1 for unigrams and bigrams, no tri/4-grams -> mean over n = 2/4, x10
    assert cider.score("a b", "A") == pytest.approx(5.0)
    # one extra word: unigram cosine 2/sqrt(6), bigram 1/sqrt(2); one bigram longer -> penalty exp(-1/72)
    expected = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert cider.score("a b c", "A") == pytest.approx(expected)
    # clipping: "a" twice in the hypothesis counts min(2 log2, log2) * log2 in the numerator
    expected = 10 * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert cider.score("a a b", "A") == pytest.approx(expected)
    assert cider.score("c d", "A") == 0.0
    # n-grams shared by every image weigh nothing: log(|I|) - log(df = |I|) = 0
    assert CiderD({"A": ["the cat"], "B": ["the dog"]}).score("the", "A") == 0.0
    assert words("A Red, circle!  moves left.") == "a red circle moves left"


def test_cider_d_equals_pycocoevalcap_on_its_corpus():
    rng = random.Random(0)
    vocab = "a the red blue green circle square star moves left right up down big small".split()

    def sentence():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(2, 9)))

    refs = {i: [sentence() for _ in range(rng.randint(1, 5))] for i in range(30)}
    hyps = {i: [sentence()] for i in refs}
    mean, per_image = Cider().compute_score(refs, hyps)
    ours = CiderD(refs).scores([hyps[i][0] for i in refs], list(refs))
    assert ours == pytest.approx(per_image, rel=1e-9, abs=1e-12)
    assert ours.mean() == pytest.approx(mean)


def test_cider_d_refuses_unknown_images_and_empty_references():
    with pytest.raises(KeyError, match="'X'"):
        CiderD({"A": ["a b"]}).score("a", "X")
    with pytest.raises(ValueError, match="no references"):
        CiderD({"A": []})


# ------------------------------------------------------------------ tiny model with a word-level LLM vocabulary
CAPTIONS = {0: ["red circle", "a red circle"], 1: ["blue square", "a blue square"],
            2: ["green star", "a green star"], 3: ["pink cross", "a pink cross"]}
WORDS = "a red blue green pink circle square star cross the moves".split()


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory) -> str:
    """A word-level vocabulary: a random byte-level tiny LLM almost never spells a whole word, so sampled
    captions would all score 0 and give SCST no signal; with words as tokens they score."""
    folder, size = write_word_tokenizer(WORDS, tmp_path_factory.mktemp("word_tokenizer"))
    assert size == 16
    return folder


def word_model(tokenizer: str, seed: int = 0):
    """The tiny video model (mean aggregation, no dropout) on a 16-token word vocabulary, init_std 0.2."""
    cls = registry.get_model_class("evlgen_video_opt")
    cfg = OmegaConf.load(cls.default_config_path("tiny")).model
    cfg.frame_aggregation = "mean"
    cfg.tomeformer.config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg.llm.tokenizer = tokenizer
    cfg.llm.config.update(init_std=0.2, vocab_size=16, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return cls.from_config(cfg)


def make_task(**kwargs) -> SCSTCaptionTask:
    task = SCSTCaptionTask(num_beams=1, max_len=6, min_len=1, evaluate=False, sample_max_len=6, **kwargs)
    task.cider = CiderD(CAPTIONS)
    return task


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.randn(4, 3, 2, 32, 32, generator=g), "image_id": torch.arange(4),
            "text_input": [CAPTIONS[i][0] for i in range(4)]}


def greedy_cider(model, task, samples) -> float:
    model.eval()
    with torch.no_grad():
        texts = model.sample_captions(samples, greedy=True, max_length=6).texts
    model.train()
    return float(task.cider.scores(texts, range(4)).mean())


def test_scst_step_trains_only_the_connector_and_mixes_cross_entropy(word_tokenizer):
    model = word_model(word_tokenizer)
    model.train()
    samples = batch()
    torch.manual_seed(1)
    task = make_task(num_samples=3)
    loss = task.train_step(model, samples)
    loss.backward()
    assert torch.isfinite(loss) and set(task.last_stats) == {"reward_sample", "reward_greedy", "advantage"}
    assert model.training  # the step samples in eval mode and restores the mode
    grads = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads <= {"ln_vision", "proj1", "tomeformer", "proj2"} and "proj2" in grads
    # xe_weight -> 1 makes the loss the cross-entropy of the references (token mean), as the model's own loss
    torch.manual_seed(1)
    mixed = make_task(num_samples=3, xe_weight=0.999999).train_step(model, samples)
    with torch.no_grad():
        xe = model(samples)["loss"]
    assert mixed.item() == pytest.approx(xe.item(), rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_scst_raises_training_cider(word_tokenizer, seed):
    """From the random model, 100 pure SCST steps (no cross-entropy: the reward is the only signal) raise the
    greedy captions' CIDEr-D on the training clips (seeds 0-5 measured: from 0.0-0.2 to 0.8-1.4)."""
    model = word_model(word_tokenizer, seed)
    samples = batch(seed)
    task = make_task(num_samples=5)
    before = greedy_cider(model, task, samples)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0)
    model.train()
    for _ in range(100):
        loss = task.train_step(model, samples)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = greedy_cider(model, task, samples)
    assert after > before + 0.5, (before, after)


def test_task_settings_are_checked_and_image_models_are_refused(word_tokenizer):
    for key, value in (("num_samples", 0), ("xe_weight", 1.0), ("temperature", 0.0)):
        with pytest.raises(ConfigError, match="run.scst_"):
            make_task(**{key: value})
    cfg = OmegaConf.create({"run_cfg": {"scst_samples": 3, "scst_xe_weight": 0.2, "max_len": 12}})
    task = SCSTCaptionTask.setup_task(cfg)
    assert (task.num_samples, task.xe_weight, task.sample_max_len, task.temperature) == (3, 0.2, 12, 1.0)
    image_model = registry.get_model_class("evlgen_opt").from_pretrained("tiny")
    with pytest.raises(ConfigError, match="cannot score sampled captions"):
        make_task().train_step(image_model, {"image": torch.randn(1, 3, 32, 32), "image_id": torch.tensor([0])})


def test_scst_through_train_py_on_moving_shapes(tmp_path, monkeypatch):
    """The registered task end to end: references from the training split, two SCST steps, evaluation."""
    proc = {"name": "alpro_video_eval", "image_size": 32, "n_frms": 2}
    config = {
        "model": {"arch": "evlgen_video_opt", "model_type": "tiny"},
        "datasets": {"moving_shapes_caption": {
            "build_info": {"root": str(tmp_path),
                           "generate": {"n_train": 6, "n_val": 2, "n_test": 2, "image_size": 32, "num_frames": 4}},
            "vis_processor": {"train": proc, "eval": proc}}},
        "run": {"task": "evlgen_scst", "runner": "runner_evlgen", "scst_samples": 2, "scst_max_len": 4,
                "lr_sched": "linear_warmup_cosine_iter_lr", "init_lr": 1e-4, "min_lr": 1e-5, "warmup_lr": 1e-5,
                "warmup_steps": 1, "weight_decay": 0.0, "max_iters": 2, "iters_per_inner_epoch": 2,
                "batch_size_train": 2, "batch_size_eval": 2, "num_workers": 0, "seed": 1, "num_beams": 1,
                "max_len": 4, "min_len": 1, "train_splits": ["train"], "valid_splits": ["val"],
                "test_splits": ["test"], "output_dir": str(tmp_path / "out"), "job_id": "scst", "device": "cpu"},
    }
    cfg_path = tmp_path / "scst.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert main(["--cfg-path", str(cfg_path)], evaluate_only=False) == 0
    lines = (tmp_path / "out/scst/log.txt").read_text().splitlines()
    stats = {key: value for line in lines if line.startswith('{"') for key, value in json.loads(line).items()}
    assert stats["train_iteration"] == 2 and math.isfinite(stats["train_loss"])
    assert "val_CIDEr" in stats and "test_CIDEr" in stats
    assert Path(tmp_path / "out/scst/checkpoint_latest.pth").exists()
