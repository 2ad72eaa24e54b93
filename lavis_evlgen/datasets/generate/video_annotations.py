"""Video caption annotations in LAVIS's format from the datasets' own files (standard splits).

* MSR-VTT (``train_val_videodatainfo.json`` + ``test_videodatainfo.json`` of MSR-VTT 10k, or one
  file holding all 10,000 videos): the official split of each video (6,513 train / 497 validate /
  2,990 test), videos ``video<N>.mp4``, ids ``N``.
* MSVD (``AllVideoDescriptions.txt``: one ``<clip> <caption>`` per line, ``#`` comments): the
  standard split by the order of the clips in ``youtube_mapping.txt`` (``<clip> vid<K>``): vid1-1200
  train, vid1201-1300 val, vid1301-1970 test; videos ``<clip>.avi`` (YouTubeClips), ids ``K``.
* WebVid-2M (``results_2M_train.csv`` / ``results_2M_val.csv`` with columns ``videoid``, ``name``
  (the caption) and ``page_dir``): one entry per row, video path from a template, default
  ``{page_dir}/{videoid}.mp4``.

Each writer produces ``train.json`` (one entry per caption) and, for evaluation splits,
``<split>.json`` plus ``<split>_gt.json`` (COCO format), the files the video caption builders read.

    python -m lavis_evlgen.datasets.generate.video_annotations msrvtt train_val_videodatainfo.json \
        test_videodatainfo.json --out msrvtt
    python -m lavis_evlgen.datasets.generate.video_annotations msvd AllVideoDescriptions.txt \
        youtube_mapping.txt --out msvd
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from lavis_evlgen.datasets.generate.coco_format import write_json
from lavis_evlgen.datasets.generate.video_files import CaptionedVideo, train_entries, write_eval_split

logger = logging.getLogger(__name__)

MSRVTT_SPLITS = {"train": "train", "validate": "val", "test": "test"}
MSVD_SPLITS = (("train", 1, 1200), ("val", 1201, 1300), ("test", 1301, 1970))


def write_splits(out_dir: Path, splits: dict[str, list[CaptionedVideo]]) -> dict[str, int]:
    """Write LAVIS annotations (+ COCO ground truth for non-train splits); returns videos per split."""
    out_dir = Path(out_dir)
    for split, items in splits.items():
        if split == "train":
            write_json(out_dir / "train.json", train_entries(items))
        else:
            write_eval_split(out_dir, split, items)
    return {split: len(items) for split, items in splits.items()}


def msrvtt_annotations(info_files: Iterable[Path], out_dir: Path) -> dict[str, int]:
    """MSR-VTT's official ``*_videodatainfo.json`` files -> LAVIS annotations in ``out_dir``."""
    split_of: dict[str, str] = {}
    refs: dict[str, list[str]] = defaultdict(list)
    for path in info_files:
        data = json.loads(Path(path).read_text())
        for video in data["videos"]:
            if video["split"] not in MSRVTT_SPLITS:
                raise ValueError(f"{path}: unknown split '{video['split']}' for {video['video_id']}")
            split_of[video["video_id"]] = MSRVTT_SPLITS[video["split"]]
        for sentence in data["sentences"]:
            refs[sentence["video_id"]].append(sentence["caption"].strip())
    splits: dict[str, list[CaptionedVideo]] = {"train": [], "val": [], "test": []}
    for video_id in sorted(split_of, key=lambda v: int(v.removeprefix("video"))):
        if not refs[video_id]:
            raise ValueError(f"MSR-VTT: video {video_id} has no caption")
        splits[split_of[video_id]].append(
            CaptionedVideo(f"{video_id}.mp4", int(video_id.removeprefix("video")), tuple(refs[video_id])))
    return write_splits(out_dir, splits)


def msvd_annotations(descriptions: Path, mapping: Path, out_dir: Path, video_ext: str = ".avi") -> dict[str, int]:
    """MSVD's ``AllVideoDescriptions.txt`` and ``youtube_mapping.txt`` -> LAVIS annotations in ``out_dir``."""
    number = {}
    for line in Path(mapping).read_text().splitlines():
        if line.strip():
            clip, vid = line.split()
            number[clip] = int(vid.removeprefix("vid"))
    refs: dict[str, list[str]] = defaultdict(list)
    for line in Path(descriptions).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip() and not line.startswith("#"):
            clip, _, caption = line.partition(" ")
            if clip not in number:
                raise ValueError(f"{descriptions}: clip '{clip}' is not in {mapping}")
            refs[clip].append(caption.strip())
    splits = {}
    for split, first, last in MSVD_SPLITS:
        clips = sorted((c for c in refs if first <= number[c] <= last), key=number.get)
        splits[split] = [CaptionedVideo(f"{c}{video_ext}", number[c], tuple(refs[c])) for c in clips]
    return write_splits(out_dir, splits)


def webvid_entries(csv_path: Path, template: str = "{page_dir}/{videoid}.mp4") -> list[dict[str, Any]]:
    """WebVid CSV rows -> LAVIS video caption entries (one caption per video; id = ``videoid``)."""
    entries = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"videoid", "name", "page_dir"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path}: WebVid CSV lacks column(s) {sorted(missing)}")
        for row in reader:
            entries.append({"video": template.format(**row), "caption": row["name"].strip(),
                            "image_id": int(row["videoid"])})
    return entries


def coco_ground_truth_from_entries(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """COCO ground truth from LAVIS entries that carry their captions (``caption``: a string or a list)."""
    refs: dict[Any, list[str]] = defaultdict(list)
    videos: dict[Any, str] = {}
    for entry in entries:
        captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        refs[entry["image_id"]].extend(captions)
        videos.setdefault(entry["image_id"], entry["video"])
    annotations = [{"image_id": vid, "caption": c, "id": 0} for vid, caps in refs.items() for c in caps]
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number
    return {"info": {"description": "generated by lavis_evlgen"}, "licenses": [], "type": "captions",
            "images": [{"id": vid, "file_name": videos[vid]} for vid in refs], "annotations": annotations}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write one dataset's annotations from its official files; prints the videos per split."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    msrvtt = sub.add_parser("msrvtt", help="MSR-VTT: one or more *_videodatainfo.json files")
    msrvtt.add_argument("info_files", nargs="+", type=Path)
    msvd = sub.add_parser("msvd", help="MSVD: AllVideoDescriptions.txt and youtube_mapping.txt")
    msvd.add_argument("descriptions", type=Path)
    msvd.add_argument("mapping", type=Path)
    msvd.add_argument("--video-ext", default=".avi", help="the clips' file extension (default .avi)")
    for command in (msrvtt, msvd):
        command.add_argument("--out", type=Path, required=True, help="the annotation folder, e.g. msrvtt or msvd")
    args = parser.parse_args(argv)
    if args.dataset == "msrvtt":
        counts = msrvtt_annotations(args.info_files, args.out)
    else:
        counts = msvd_annotations(args.descriptions, args.mapping, args.out, args.video_ext)
    print(f"{args.dataset}: " + ", ".join(f"{split} {n} videos" for split, n in counts.items()) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
