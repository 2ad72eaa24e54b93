"""BLIP-2 baselines (LAVIS's Blip2Qformer / Blip2OPT subclassed): build offline, train, generate, hand-off."""
import os
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from lavis.common.registry import registry
from lavis.models.blip2_models.blip2_opt import Blip2OPT
from lavis.models.blip2_models.blip2_qformer import Blip2Qformer
from omegaconf import OmegaConf

import lavis_evlgen
from lavis_evlgen.common.checkpoint import trainable_state_dict
from lavis_evlgen.models.blip2 import Blip2Stage1, Blip2Stage2Llama, Blip2Stage2OPT
from lavis_evlgen.models.weights import MissingWeightsError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
STAGE2 = ["blip2_stage2_opt", "blip2_stage2_llama"]


pytestmark = pytest.mark.usefixtures("one_thread_and_no_leftover_group")


def tiny(name, **overrides):
    cls = registry.get_model_class(name)
    cfg = OmegaConf.load(cls.default_config_path("tiny")).model
    cfg.merge_with(overrides)
    return cls.from_config(cfg)


def batch(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g),
            "text_input": ["a red circle", "two small blue squares", "a green star"][:n]}


def loss_of(out):
    return out["loss"]


def test_variants_are_lavis_subclasses_and_registered():
    assert issubclass(Blip2Stage1, Blip2Qformer)
    assert issubclass(Blip2Stage2OPT, Blip2OPT) and issubclass(Blip2Stage2Llama, Blip2OPT)
    for name in ["blip2_stage1", *STAGE2]:
        cls = registry.get_model_class(name)
        for model_type in cls.PRETRAINED_MODEL_CONFIG_DICT:
            assert os.path.isfile(cls.default_config_path(model_type)), (name, model_type)
    from lavis.models import model_zoo

    assert "tiny" in model_zoo.model_zoo["blip2_stage1"]


def test_stage1_trains_all_three_losses_and_keeps_the_vit_frozen():
    torch.manual_seed(0)
    model, _, _ = lavis_evlgen.load_model_and_preprocess("blip2_stage1", "tiny")
    model.train()
    assert not model.visual_encoder.training
    vit_before = {n: p.clone() for n, p in model.visual_encoder.named_parameters()}
    out = model(batch(3))
    for part in ("loss_itc", "loss_itm", "loss_lm"):
        assert torch.isfinite(out[part]) and out[part] > 0, part
    assert torch.allclose(out.loss, out.loss_itc + out.loss_itm + out.loss_lm)
    out.loss.backward()
    grads = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {"Qformer", "query_tokens", "ln_vision", "vision_proj", "text_proj", "itm_head", "temp"}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    opt.step()
    for n, p in model.visual_encoder.named_parameters():
        assert not p.requires_grad and torch.equal(p, vit_before[n]), n


def test_stage1_query_ffns_start_from_the_text_ffns():
    model = tiny("blip2_stage1")
    layer = model.Qformer.bert.encoder.layer[0]
    assert torch.equal(layer.intermediate_query.dense.weight, layer.intermediate.dense.weight)
    assert len(model.tokenizer) == 30523 and model.tokenizer.bos_token == "[DEC]"
    assert model.Qformer.bert.embeddings.word_embeddings.num_embeddings == 30523


def test_stage1_needs_two_samples():
    with pytest.raises(ValueError, match="batch_size_train"):
        tiny("blip2_stage1")(batch(1))


def test_stage1_generate_is_batch_consistent_with_beams():
    """Beam search on a batch gives each image's own caption (queries are not expanded twice)."""
    torch.manual_seed(0)
    model = tiny("blip2_stage1").eval()
    with torch.no_grad():
        model.query_tokens.normal_(0, 1.0)
    samples = batch(2, seed=3)
    both = model.generate(samples, num_beams=3, max_length=6, min_length=2)
    alone = [model.generate({"image": samples["image"][i:i + 1]}, num_beams=3, max_length=6, min_length=2)[0]
             for i in range(2)]
    assert both == alone and all(isinstance(c, str) and c for c in both)
    assert len(model.generate(samples, use_nucleus_sampling=True, max_length=5, min_length=1)) == 2


@pytest.mark.parametrize("name", STAGE2)
def test_stage2_trains_only_the_qformer_side(name):
    torch.manual_seed(0)
    model, _, _ = lavis_evlgen.load_model_and_preprocess(name, "tiny")
    model.train()
    assert not model.opt_model.training and not model.visual_encoder.training
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"Qformer", "query_tokens", "ln_vision", "opt_proj"}
    # Hand count (hidden 32, FFN 64, 2 layers, cross-attention in layer 0 only, 4 queries, ViT width 32):
    # embeddings LN 64; per layer self-attention 4*(32*32+32)+64 = 4288 and query FFN
    # (32*64+64)+(64*32+32)+64 = 4256; cross-attention 4288; queries 128; ln_vision 64; opt_proj 1056.
    assert model.trainable_parameters() == 64 + 2 * (4288 + 4256) + 4288 + 128 + 64 + 1056
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    samples = {"image": batch(1)["image"], "text_input": ["a red circle"]}
    first = loss_of(model(samples)).item()
    for _ in range(25):
        opt.zero_grad()
        loss_of(model(samples)).backward()
        opt.step()
    assert loss_of(model(samples)).item() < first - 0.05
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n


def test_forward_is_lavis_blip2opt_forward():
    """The shared forward equals LAVIS's Blip2OPT.forward (it runs on OPT only), whose text processor has
    prepended the prompt."""
    torch.manual_seed(0)
    model = tiny("blip2_stage2_opt", prompt="a photo of ").eval()
    model.prompt_length = model.opt_tokenizer(model.prompt, return_tensors="pt").attention_mask.sum(1)
    captions = ["a red circle", "two squares"]
    lavis_loss = Blip2OPT.forward(model, {**batch(2), "text_input": ["a photo of " + c for c in captions]})["loss"]
    ours = model({**batch(2), "text_input": captions})["loss"]
    torch.testing.assert_close(ours, lavis_loss)  # same loss; the head runs on fewer positions


@pytest.mark.parametrize("name", STAGE2)
def test_stage2_greedy_generate_matches_a_manual_decode(name):
    torch.manual_seed(0)
    model = tiny(name).eval()
    samples = batch(2)
    captions = model.generate(samples, num_beams=1, max_length=5, min_length=5)
    vis, _ = model.encode_image(samples)
    embed = model.opt_model.get_input_embeddings()
    for row in range(2):
        seq, ids = vis[row:row + 1], []
        for _ in range(5):
            logits = model.opt_model(inputs_embeds=seq).logits[0, -1]
            logits[model.eos_token_id] = float("-inf")  # min_length 5: no end before 5 tokens
            nxt = int(logits.argmax())
            ids.append(nxt)
            seq = torch.cat([seq, embed(torch.tensor([[nxt]]))], dim=1)
        assert captions[row] == model.opt_tokenizer.decode(ids, skip_special_tokens=True).strip()
    beams = model.generate(samples, num_beams=3, max_length=4, num_captions=2)
    assert len(beams) == 4


@pytest.mark.parametrize("name", STAGE2)
def test_stage2_starts_from_a_stage1_checkpoint(tmp_path, name):
    torch.manual_seed(0)
    stage1 = tiny("blip2_stage1")
    path = tmp_path / "stage1.pth"
    torch.save({"model": trainable_state_dict(stage1)}, path)
    stage2 = tiny(name, stage1_checkpoint=str(path))
    s1, s2 = stage1.state_dict(), stage2.state_dict()
    shared = [k for k in s2 if k.startswith(("Qformer.", "query_tokens", "ln_vision."))]
    assert len(shared) > 20
    for key in shared:
        assert torch.equal(s1[key], s2[key]), key
    cold = tiny(name)
    assert not torch.equal(cold.query_tokens, stage2.query_tokens)


def test_stage2_rejects_a_checkpoint_that_is_not_stage1(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"opt_proj.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ValueError, match=r"stage1_checkpoint.*missing"):
        tiny("blip2_stage2_opt", stage1_checkpoint=str(path))
    with pytest.raises(MissingWeightsError, match=r"model\.stage1_checkpoint"):
        tiny("blip2_stage2_opt", stage1_checkpoint=str(tmp_path / "nowhere.pth"))


def test_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny("blip2_stage2_llama")
    path = tmp_path / "run.pth"
    torch.save({"model": trainable_state_dict(model)}, path)
    torch.manual_seed(1)
    again = tiny("blip2_stage2_llama", pretrained=str(path))
    assert torch.equal(again.opt_proj.weight, model.opt_proj.weight)


def test_precomputed_vit_tokens_give_the_same_loss():
    torch.manual_seed(0)
    model = tiny("blip2_stage2_llama").eval()
    samples = batch(2)
    feats = model.visual_encoder(samples["image"])
    assert feats.shape == (2, 17, 32)
    a = model(samples)["loss"]
    b = model({"image_features": feats, "text_input": samples["text_input"]})["loss"]
    assert torch.equal(a, b)


def test_use_features_builds_no_vit_and_says_so():
    model = tiny("blip2_stage2_opt", use_features=True, vision={"width": 32})
    assert model.visual_encoder.encoder is None
    feats = torch.randn(2, 17, 32)
    assert torch.isfinite(model({"image_features": feats, "text_input": ["a", "b"]})["loss"])
    with pytest.raises(ValueError, match="model.use_features"):
        model(batch(2))


def test_qformer_loads_a_local_bert_and_names_bad_keys(tmp_path):
    from lavis_evlgen.models.blip2.parts import minilm_folder

    cfg = OmegaConf.load(Blip2Stage2Llama.default_config_path("tiny")).model
    cfg.qformer = {"bert": minilm_folder(), "num_query_token": 8, "num_layers": 2}
    model = Blip2Stage2Llama.from_config(cfg)
    from safetensors.torch import load_file

    bert = load_file(os.path.join(minilm_folder(), "model.safetensors"))
    key = "encoder.layer.1.attention.self.query.weight"
    assert torch.equal(model.Qformer.bert.state_dict()[key], bert[key])
    assert model.Qformer.config.num_hidden_layers == 2 and model.query_tokens.shape == (1, 8, 384)
    cfg.qformer.bert = str(tmp_path / "nowhere")
    with pytest.raises(MissingWeightsError, match=r"model\.qformer\.bert"):
        Blip2Stage2Llama.from_config(cfg)


# bert-base Q-Former at paper size (hand count): self-attention 4*(768*768+768)+1536 = 2,363,904 per layer,
# FFN (768*3072+3072)+(3072*768+768)+1536 = 4,723,968, cross-attention to EVA-ViT-g (width 1408)
# (768*768+768) + 2*(1408*768+768) + (768*768+768) + 1536 = 3,346,944 in 6 of 12 layers.
SELF, FFN, CROSS = 2_363_904, 4_723_968, 3_346_944


def paper_cfg(name, model_type):
    cls = registry.get_model_class(name)
    cfg = OmegaConf.load(cls.default_config_path(model_type)).model
    cfg.vision.weights = None
    cfg.qformer.bert = None
    cfg.qformer.tokenizer = "minilm_vocab"
    if "llm" in cfg:
        cfg.llm.path, cfg.llm.tokenizer = None, "byte"
        cfg.stage1_checkpoint = None
    return cls, cfg


def skeleton(name, model_type):
    """Paper-size model on torch's meta device, reading precomputed ViT tokens (no ViT built).

    torch's meta device rather than accelerate's init_empty_weights, which re-creates each registered
    parameter and so unties the Q-Former's LM head from its word embeddings.
    """
    cls, cfg = paper_cfg(name, model_type)
    cfg.use_features, cfg.vision.width = True, 1408
    with torch.device("meta"):
        return cls.from_config(cfg)


@pytest.mark.parametrize("name,model_type", [("blip2_stage1", "pretrain"), ("blip2_stage1", "pretrain_vitL"),
                                             ("blip2_stage2_opt", "pretrain_opt2.7b")])
def test_paper_types_build_with_their_vit(name, model_type):
    cls, cfg = paper_cfg(name, model_type)
    with init_empty_weights():
        model = cls.from_config(cfg)
    width = {"eva_clip_g": 1408, "clip_L": 1024}[cfg.vision.name]
    assert model.visual_encoder.num_features == width
    assert model.Qformer.bert.encoder.layer[0].crossattention.self.key.in_features == width
    assert len(model.Qformer.bert.encoder.layer) == 12 and model.query_tokens.shape == (1, 32, 768)


def test_paper_size_stage2_trainables_hand_counted():
    model = skeleton("blip2_stage2_opt", "pretrain_opt2.7b")
    qformer = 1536 + 12 * (SELF + FFN) + 6 * CROSS
    assert model.trainable_parameters() == qformer + 32 * 768 + 2 * 1408 + (768 * 2560 + 2560)


def test_paper_size_stage1_trainables_hand_counted():
    model = skeleton("blip2_stage1", "pretrain")
    vocab = 30523  # bert-base-uncased + [DEC]
    embeddings = vocab * 768 + 512 * 768 + 1536          # word (tied to the LM head), position, LayerNorm
    layers = 12 * (SELF + 2 * FFN) + 6 * CROSS            # text FFN and query FFN in every layer
    lm_head = (768 * 768 + 768) + 1536 + vocab            # transform dense + LayerNorm + decoder bias
    heads = 2 * (768 * 256 + 256) + (768 * 2 + 2) + 1    # vision_proj, text_proj, itm_head, temp
    expected = embeddings + layers + lm_head + 32 * 768 + 2 * 1408 + heads
    assert model.trainable_parameters() == expected
    assert 185e6 < expected < 190e6  # BLIP-2 quotes 188M for its Q-Former


def test_qformer_dropout_option_and_bad_value():
    from omegaconf import OmegaConf

    from lavis_evlgen.models.blip2.parts import qformer_config

    cfg = OmegaConf.create({"config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                       "intermediate_size": 64}, "dropout": 0.0})
    config = qformer_config(cfg, vision_width=16)
    assert config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.0
    cfg.dropout = None
    assert qformer_config(cfg, vision_width=16).hidden_dropout_prob == 0.1  # BERT's default kept
    cfg.dropout = 1.5
    with pytest.raises(ValueError, match="model.qformer.dropout"):
        qformer_config(cfg, vision_width=16)


@pytest.mark.parametrize("name", STAGE2)
def test_stage2_answers_questions_with_blip2s_prompt(name):
    """predict_answers (LAVIS 1.0.2's Blip2OPT has none): generate after "Question: {q} Short answer:"."""
    torch.manual_seed(0)
    model = tiny(name).eval()
    samples = {**batch(2), "text_input": ["what colour?", "how many shapes?"]}
    answers = model.predict_answers(samples, num_beams=1, max_len=3)
    prompts = ["Question: what colour? Short answer:", "Question: how many shapes? Short answer:"]
    assert answers == model.generate(samples, num_beams=1, max_length=3, length_penalty=0.0, prompt=prompts)
    with pytest.raises(ValueError, match="run.inference_method"):
        model.predict_answers(samples, inference_method="rank")
    assert tiny(name, apply_lemmatizer=True)._apply_lemmatizer


BLIP2_REPRO_EVAL = Path(__file__).resolve().parents[2] / "projects/blip2_repro/eval"
EVLGEN_EVAL = BLIP2_REPRO_EVAL.parents[1] / "evlgen/eval"


@pytest.mark.parametrize("benchmark", ["coco", "flickr30k", "nocaps", "vqav2", "okvqa", "gqa"])
def test_blip2_eval_configs_evaluate_as_evlgens_do(benchmark):
    """Beside every EVLGen OPT-2.7b benchmark config, one for the stage-2 baseline with the same data and run."""
    from lavis_evlgen.common.config_check import check_config

    blip2 = OmegaConf.load(BLIP2_REPRO_EVAL / f"{benchmark}_opt2.7b.yaml")
    evlgen = OmegaConf.load(EVLGEN_EVAL / f"{benchmark}_opt2.7b.yaml")
    check_config(blip2, evaluate_only=True)
    assert (blip2.model.arch, blip2.model.model_type) == ("blip2_stage2_opt", "pretrain_opt2.7b")
    assert blip2.model.get("apply_lemmatizer", False) == evlgen.model.get("apply_lemmatizer", False)
    assert blip2.datasets == evlgen.datasets
    differ = {"output_dir", "job_id"}
    assert {k: v for k, v in blip2.run.items() if k not in differ} == \
        {k: v for k, v in evlgen.run.items() if k not in differ}
    benchmarks = ("coco", "flickr30k", "nocaps", "vqav2", "okvqa", "gqa")
    assert {p.stem for p in BLIP2_REPRO_EVAL.glob("*.yaml")} == {f"{b}_opt2.7b" for b in benchmarks}


def test_blip2_gqa_config_evaluates_a_stage2_checkpoint_end_to_end(tmp_path, monkeypatch):
    """projects/blip2_repro/eval/gqa_opt2.7b.yaml's data and run sections as they are, on a tiny stage-2 run."""
    import json

    from lavis_evlgen.runners.launch import main
    from tests.datasets.benchmark_fixtures import write_gqa

    answers = write_gqa(tmp_path / "data")
    monkeypatch.setenv("EVLGEN_DATA", str(tmp_path / "data"))
    torch.manual_seed(0)
    checkpoint = tmp_path / "stage2.pth"
    torch.save({"model": trainable_state_dict(tiny("blip2_stage2_opt")), "epoch": 1}, checkpoint)
    cfg = OmegaConf.load(BLIP2_REPRO_EVAL / "gqa_opt2.7b.yaml")
    cfg.model = {"arch": "blip2_stage2_opt", "model_type": "tiny", "pretrained": str(checkpoint)}
    cfg_path = tmp_path / "gqa.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(cfg))
    options = ["datasets.evlgen_gqa.vis_processor.eval.image_size=32", "run.device=cpu", "run.num_workers=0",
               "run.batch_size_eval=2", "run.num_beams=1", "run.max_len=3", f"run.output_dir={tmp_path / 'out'}"]
    assert main(["--cfg-path", str(cfg_path), "--options", *options], evaluate_only=True) == 0
    job = tmp_path / "out/blip2_gqa_opt2.7b"
    scores = json.loads((job / "evaluate.txt").read_text().splitlines()[-1])["testdev"]
    assert scores["questions_scored"] == len(answers) - 1  # one image is unreadable


def test_stage2_takes_evlgens_layout_options():
    """bos_first and match_embedding_scale act on BLIP-2 stage 2 as on EVLGen (the shared layout)."""
    torch.manual_seed(0)
    model = tiny("blip2_stage2_llama", bos_first=True, match_embedding_scale=True).eval()
    word_rms = model.opt_model.get_input_embeddings().weight.pow(2).mean().sqrt()
    rms = model.opt_proj.weight.pow(2).sum(dim=1).mean().sqrt()
    torch.testing.assert_close(rms, word_rms)
    assert not model.opt_proj.bias.any()
    vis, vis_atts = model.encode_image(batch(2))
    ids = model.opt_tokenizer(["a"], return_tensors="pt", add_special_tokens=False).input_ids.expand(2, -1)
    embeds, atts = model.llm_inputs(vis, vis_atts, ids, torch.ones_like(ids))
    bos = model.opt_model.get_input_embeddings().weight[model.opt_tokenizer.bos_token_id]
    assert embeds.shape[1] == 1 + vis.shape[1] + ids.shape[1] and atts.all()
    assert torch.equal(embeds[0, 0], bos) and torch.equal(embeds[:, 1:1 + vis.shape[1]], vis)
