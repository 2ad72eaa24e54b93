"""VQAv2 / OK-VQA / GQA builders on tiny files in the official formats, broken images included."""
from __future__ import annotations

import pytest
from lavis.common.registry import registry
from omegaconf import OmegaConf

import lavis_evlgen  # noqa: F401
from lavis_evlgen.common.paths import config_path
from lavis_evlgen.datasets.datasets.vqa_formats import read_gqa, read_vqa
from tests.datasets.benchmark_fixtures import write_gqa, write_json, write_okvqa, write_vqa


def build(name: str, root, **build_info):
    cfg = OmegaConf.load(config_path(f"datasets/{name}/defaults.yaml")).datasets[name]
    cfg = OmegaConf.merge(cfg, {"vis_processor": {"eval": {"name": "blip_image_eval", "image_size": 32}},
                                "build_info": {"root": str(root), **build_info}})
    return registry.get_builder_class(name)(cfg).build_datasets()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa")
    write_vqa(root)
    write_okvqa(root)
    write_gqa(root)
    return root


def test_vqav2_val_from_official_files(root):
    val = build("evlgen_vqav2", root)["val"]
    assert [a["question_id"] for a in val.annotation] == [1001, 1002, 1003, 1004, 1005]
    assert val.annotation[0]["image"] == "val2014/COCO_val2014_000000000041.jpg"
    assert len(val.annotation[2]["answer"]) == 10
    assert val.coco_fmt_qust_file.endswith("v2_OpenEnded_mscoco_val2014_questions.json")
    assert val.coco_fmt_anno_file.endswith("v2_mscoco_val2014_annotations.json")
    batch = val.collater([val[i] for i in range(len(val))])
    assert batch["n_skipped"] == 1
    assert batch["question_id"].tolist() == [1001, 1002, 1003, 1005]
    assert batch["text_input"][0] == "what color is the bus?"
    assert batch["answer"][0] == "red"


def test_okvqa_test_split(root):
    test = build("evlgen_okvqa", root)["test"]
    assert [a["question_id"] for a in test.annotation] == [5001, 5002, 5003]
    assert test.annotation[0]["answer"].count("tennis") == 6
    batch = test.collater([test[i] for i in range(len(test))])
    assert batch["n_skipped"] == 1 and batch["question_id"].tolist() == [5001, 5002]


def test_gqa_testdev_keeps_string_ids_and_answers(root):
    testdev = build("evlgen_gqa", root)["testdev"]
    assert testdev.gt_answers == {"20968379": "yes", "05451384": "pipe", "201640614": "left", "20968380": "a bird"}
    assert testdev.annotation[1]["image"] == "n161313.jpg"
    batch = testdev.collater([testdev[i] for i in range(len(testdev))])
    assert batch["n_skipped"] == 1
    assert batch["question_id"] == ["20968379", "05451384", "201640614"]


def test_questions_without_answers_are_an_error(tmp_path):
    questions = write_json(tmp_path / "q.json", {"questions": [{"question_id": 1, "image_id": 2, "question": "?"}]})
    annotations = write_json(tmp_path / "a.json", {"annotations": []})
    with pytest.raises(ValueError, match="no answers for 1 question"):
        read_vqa(str(questions), str(annotations), "{image_id}.jpg")
    with pytest.raises(ValueError, match="not a GQA questions file"):
        read_gqa(str(questions), "{image_id}.jpg")


def test_missing_files_and_keys_name_the_config_key(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="build_info.annotations.val.questions"):
        build("evlgen_vqav2", tmp_path)
    with pytest.raises(ValueError, match="build_info.annotations.testdev.image_pattern"):
        build("evlgen_gqa", root, annotations={"testdev": {"image_pattern": ""}})
