"""Tiny copies of the public data sets' files (benchmarks, pre-training lists and shards, video captions), in their
official formats, with a few broken images.

The image writers put their files under ``root`` in the layout of the dataset configs
(lavis_evlgen/configs/datasets/*/defaults.yaml) and return what the tests need to check against; the video
writers write into the folders they are given.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from lavis_evlgen.datasets.generate import video_files

SIZE = 32


def write_image(path: Path, seed: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def image_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def write_broken(path: Path, truncated: bool = False) -> None:
    """Not an image at all, or a JPEG cut short."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(99)[:200] if truncated else b"this is not an image")


def write_maybe(path: Path, seed: int, readable: bool) -> None:
    """A random image, or (unreadable) a JPEG cut short for odd seeds and a non-image for even ones."""
    if readable:
        write_image(path, seed)
    else:
        write_broken(path, truncated=seed % 2 == 1)


def coco_name(split: str, image_id: int) -> str:
    return f"{split}2014/COCO_{split}2014_{image_id:012d}.jpg"


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# ---------------------------------------------------------------- captions
KARPATHY_COCO = [  # (cocoid, folder, split, captions, readable)
    (11, "train", "train", ["a cat on a mat", "a cat sits"], True),
    (12, "val", "restval", ["a dog in a park"], True),
    (21, "val", "val", ["a red bus", "a bus on a road"], True),
    (31, "val", "test", ["a man riding a horse", "a person on a horse", "horse and rider"], True),
    (32, "val", "test", ["two birds on a branch", "birds sitting on a tree"], True),
    (33, "val", "test", ["a broken picture"], False),
]


def write_coco(root: Path) -> dict:
    """coco/annotations/{dataset_coco.json, coco_karpathy_train.json, captions_val2014.json}, coco/images/."""
    images = []
    for n, (cocoid, folder, split, captions, readable) in enumerate(KARPATHY_COCO):
        name = coco_name(folder, cocoid)
        write_maybe(root / "coco/images" / name, cocoid, readable)
        images.append({"filepath": f"{folder}2014", "filename": name.split("/")[1], "imgid": n, "split": split,
                       "sentences": [{"raw": c, "tokens": c.split(), "imgid": n, "sentid": 10 * n + k}
                                     for k, c in enumerate(captions)],
                       "cocoid": cocoid, "sentids": [10 * n + k for k in range(len(captions))]})
    write_json(root / "coco/annotations/dataset_coco.json", {"images": images, "dataset": "coco"})
    train = [{"caption": c, "image": coco_name(folder, cocoid), "image_id": f"coco_{cocoid}"}
             for cocoid, folder, split, captions, _ in KARPATHY_COCO if split in ("train", "restval") for c in captions]
    write_json(root / "coco/annotations/coco_karpathy_train.json", train)
    val = [(cocoid, captions) for cocoid, folder, _, captions, _ in KARPATHY_COCO if folder == "val"]
    write_json(root / "coco/annotations/captions_val2014.json", {
        "info": {}, "licenses": [],
        "images": [{"id": i, "file_name": coco_name("val", i).split("/")[1]} for i, _ in val],
        "annotations": [{"image_id": i, "caption": c, "id": 100 * i + k} for i, cs in val for k, c in enumerate(cs)]})
    return {"train_captions": len(train), "test_ids": [31, 32, 33]}


FLICKR = [("1000092795.jpg", "test", ["two young guys with shaggy hair", "two men outside"], True),
          ("10002456.jpg", "test", ["several men in hard hats"], True),
          ("1000268201.jpg", "train", ["a child in a pink dress"], True),
          ("1000344755.jpg", "test", ["someone on a ladder"], False)]


def write_flickr(root: Path) -> None:
    """flickr30k/annotations/dataset_flickr30k.json and flickr30k/images/flickr30k-images/."""
    images = []
    for n, (name, split, captions, readable) in enumerate(FLICKR):
        write_maybe(root / "flickr30k/images/flickr30k-images" / name, n, readable)
        images.append({"filename": name, "imgid": n, "split": split,
                       "sentences": [{"raw": c, "tokens": c.split(), "imgid": n, "sentid": n * 10 + k}
                                     for k, c in enumerate(captions)], "sentids": []})
    write_json(root / "flickr30k/annotations/dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})


NOCAPS = [  # (id, domain, captions, readable)
    (0, "in-domain", ["a dog runs on the grass", "a brown dog running"], True),
    (1, "in-domain", ["a cat sleeps on a sofa", "a cat lying on a couch"], True),
    (2, "near-domain", ["a red fire truck on a street", "a fire engine parked"], True),
    (3, "near-domain", ["a jar of honey", "honey in a glass jar"], False),
    (4, "out-domain", ["a jellyfish in blue water", "a jellyfish swimming"], True),
    (5, "out-domain", ["a violin on a table", "a wooden violin"], True),
]


def write_nocaps(root: Path) -> dict:
    """nocaps/annotations/nocaps_val_4500_captions.json (COCO format with domains), nocaps/images/val/."""
    images, annotations = [], []
    for image_id, domain, captions, readable in NOCAPS:
        name = f"{image_id:04x}abcdef.jpg"
        write_maybe(root / "nocaps/images/val" / name, image_id, readable)
        images.append({"id": image_id, "file_name": name, "domain": domain, "open_images_id": name[:-4],
                       "height": SIZE, "width": SIZE, "coco_url": "", "license": 0, "date_captured": ""})
        annotations += [{"image_id": image_id, "caption": c, "id": 10 * image_id + k} for k, c in enumerate(captions)]
    write_json(root / "nocaps/annotations/nocaps_val_4500_captions.json",
               {"info": {}, "licenses": [], "images": images, "annotations": annotations})
    return {image_id: captions for image_id, _, captions, _ in NOCAPS}


# ---------------------------------------------------------------- VQA
VQA_INFO = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
            "license": {}}
VQAV2 = [  # (question_id, image_id, question, ten answers, answer type, readable)
    (1001, 41, "what color is the bus?", ["red"] * 7 + ["dark red"] * 2 + ["maroon"], "other", True),
    (1002, 41, "is it raining?", ["no"] * 10, "yes/no", True),
    (1003, 42, "how many dogs are there?", ["2"] * 4 + ["two"] * 2 + ["3"] * 4, "number", True),
    (1004, 43, "what is on the table?", ["cake"] * 10, "other", False),
    (1005, 44, "what animal is this?", ["cat"] * 2 + ["kitten"] * 8, "other", True),
]


def write_vqa(root: Path, folder: str = "coco/annotations",
              questions_name: str = "v2_OpenEnded_mscoco_val2014_questions.json",
              annotations_name: str = "v2_mscoco_val2014_annotations.json", items=VQAV2) -> dict:
    """Official VQA questions + annotations files and the COCO val2014 images they need."""
    for image_id in sorted({i for _, i, *_ in items}):
        readable = all(r for _, i, *_, r in items if i == image_id)
        write_maybe(root / "coco/images" / coco_name("val", image_id), image_id, readable)
    write_json(root / folder / questions_name, {
        **VQA_INFO, "questions": [{"image_id": i, "question": q, "question_id": qid} for qid, i, q, *_ in items]})
    write_json(root / folder / annotations_name, {**VQA_INFO, "annotations": [
        {"question_id": qid, "image_id": i, "question_type": "what", "answer_type": at,
         "multiple_choice_answer": answers[0],
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)]}
        for qid, i, _, answers, at, _ in items]})
    return {qid: answers for qid, _, _, answers, _, _ in items}


def _twice(answers: list[str]) -> list[str]:
    """OK-VQA lists each of its five answers twice."""
    return [a for a in answers for _ in (0, 1)]


OKVQA = [(5001, 51, "what sport is this?", _twice(["tennis", "tennis", "tennis", "racket", "sport"]), "other", True),
         (5002, 52, "what is this animal used for?", _twice(["milk"] * 4 + ["meat"]), "other", True),
         (5003, 53, "who invented this?", _twice(["edison"] * 5), "other", False)]


def write_okvqa(root: Path) -> dict:
    return write_vqa(root, "okvqa/annotations", "OpenEnded_mscoco_val2014_questions.json",
                     "mscoco_val2014_annotations.json", OKVQA)


GQA = {"20968379": ("n161313", "Is the sky dark?", "yes", True),
       "05451384": ("n161313", "What is on the white wall?", "pipe", True),
       "201640614": ("n235859", "Which side is the car on?", "left", True),
       "20968380": ("n99999", "What is this?", "a bird", False)}


def write_gqa(root: Path) -> dict:
    """gqa/annotations/testdev_balanced_questions.json and gqa/images/<imageId>.jpg."""
    for qid, (image_id, _, _, readable) in GQA.items():
        write_maybe(root / "gqa/images" / f"{image_id}.jpg", len(image_id), readable)
    write_json(root / "gqa/annotations/testdev_balanced_questions.json", {
        qid: {"semantic": [], "entailed": [], "equivalent": [qid], "question": q, "imageId": image_id,
              "isBalanced": True, "groups": {"global": None, "local": "x"}, "answer": a,
              "semanticStr": "", "annotations": {}, "types": {"detailed": "x", "semantic": "x", "structural": "x"},
              "fullAnswer": f"{a}."}
        for qid, (image_id, q, a, _) in GQA.items()})
    return {qid: a for qid, (_, _, a, _) in GQA.items()}


# ---------------------------------------------------------------- pre-training
def write_capfilt(root: Path) -> list[dict]:
    """capfilt/ccs.json (BLIP's CapFilt list: str or list captions; one broken image) + capfilt/images/."""
    records = [{"image": "a.jpg", "caption": "a photo of a lake"},
               {"image": "b.jpg", "caption": ["a mountain at dusk", "snowy peaks"]},
               {"image": str(root / "capfilt/images/c.jpg"), "caption": "an absolute path"},
               {"image": "broken.jpg", "caption": "never read"},
               {"image": "truncated.jpg", "caption": "cut short"}]
    for k, name in enumerate("abc"):
        write_image(root / "capfilt/images" / f"{name}.jpg", k)
    write_broken(root / "capfilt/images/broken.jpg")
    write_broken(root / "capfilt/images/truncated.jpg", truncated=True)
    write_json(root / "capfilt/ccs.json", records)
    return records


def write_shards(root: Path, n_shards: int = 2, per_shard: int = 4) -> dict:
    """laion/{00000..0000N}.tar: jpg + txt (or json caption) per sample; one corrupt image per shard;
    plus laion/truncated.tar, a copy of the first shard cut off inside its first member."""
    folder = root / "laion"
    folder.mkdir(parents=True, exist_ok=True)
    good = 0
    for s in range(n_shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for k in range(per_shard):
                key = f"{s:05d}{k:04d}"
                corrupt = k == per_shard - 1
                members = {f"{key}.jpg": b"garbage" if corrupt else image_bytes(10 * s + k)}
                if k % 2:
                    members[f"{key}.json"] = json.dumps({"caption": f"caption {key}"}).encode()
                else:
                    members[f"{key}.txt"] = f"caption {key}".encode()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                good += not corrupt
    (folder / "truncated.tar").write_bytes((folder / "00000.tar").read_bytes()[:512 + 300])
    return {"pattern": f"laion/{{00000..{n_shards - 1:05d}}}.tar", "good_per_pass": good, "corrupt_per_pass": n_shards}


# ---------------------------------------------------------------- video
def ramp(num_frames: int) -> list[np.ndarray]:
    """Frame k is flat grey of value 8k (so the loaded frames tell which were read)."""
    return [np.full((SIZE, SIZE, 3), 8 * k, dtype=np.uint8) for k in range(num_frames)]


def write_video_captions(folder: Path) -> None:
    """LAVIS video captions: folder/{train,val,test}.json, {val,test}_gt.json and folder/videos/clip{0,1}.mp4."""
    clips = [video_files.CaptionedVideo(f"clip{k}.mp4", k, (f"a grey clip getting {word}", "grey frames"))
             for k, word in enumerate(("brighter", "darker"))]
    video_files.write_mp4(folder / "videos/clip0.mp4", ramp(24))
    video_files.write_mp4(folder / "videos/clip1.mp4", ramp(24)[::-1])
    write_json(folder / "train.json", video_files.train_entries(clips))
    for split in ("val", "test"):
        video_files.write_eval_split(folder, split, clips)


def write_webvid(csv: Path, videos: Path) -> None:
    """A WebVid-2M release CSV of two rows, and the video of the first only (videos/000/1001.mp4)."""
    video_files.write_mp4(videos / "000/1001.mp4", ramp(8))
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text("videoid,contentUrl,duration,page_dir,name\n"
                   "1001,http://x,PT00H00M10S,000,Aerial view of a forest\n"
                   "1002,http://x,PT00H00M10S,000,\"Woman walking, smiling\"\n")
