"""Moving-shapes clips: one coloured shape crossing a plain background, captioned by its motion.

Every clip shows one large shape (a colour and kind of ``shapes_scene``) moving in a straight line
left, right, up or down at constant speed, drawn with the shapes renderer and written as an H.264
mp4. Its captions name colour, kind and direction ("a red circle moves left", "a red circle moving
to the left", "the red circle goes left"), so captioning it needs the order of the frames: any
single frame, and the set of frames without their order, fit two opposite directions equally well.

The test split comes in reversal pairs: clip 2i+1 is clip 2i played backwards (the same frames in
reverse order), so it moves the opposite way. A model blind to frame order gives both clips of a
pair the same caption and so names the direction of at most one of them.

Layout of ``root`` after :func:`generate_moving_shapes`::

    videos/{train,val,test}/NNNNNN.mp4   H.264 clips
    train.json                           LAVIS: one entry per caption
    val.json, test.json                  LAVIS: one entry per clip (with "direction" and "color_kind")
    val_gt.json, test_gt.json            COCO caption ground truth
    clips.json                           per split, each clip's colour, kind, direction and path
    manifest.json                        the generation arguments (written last)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lavis_evlgen.datasets.generate.coco_format import write_json
from lavis_evlgen.datasets.generate.manifest import clear, is_current, write_manifest
from lavis_evlgen.datasets.generate.shapes_render import render
from lavis_evlgen.datasets.generate.shapes_scene import COLORS, SHAPES, SIZES, Scene, Shape
from lavis_evlgen.datasets.generate.video_files import CaptionedVideo, train_entries, write_eval_split, write_mp4

SPLITS = ("train", "val", "test")
ID_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}
DIRECTIONS = ("left", "right", "up", "down")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SIZE = "large"
MIN_TRAVEL = 0.45  # of the free span, so that the motion is plain in any two distant frames
FORMAT_VERSION = 1
OUTPUTS = ["videos", "train.json", "val.json", "val_gt.json", "test.json", "test_gt.json", "clips.json"]


@dataclass(frozen=True)
class Motion:
    """One clip: the shape, its direction, and its centre in the first and last frame (pixels)."""

    color: str
    kind: str
    direction: str
    start: tuple[float, float]
    end: tuple[float, float]
    background_seed: int

    def reversed(self) -> "Motion":
        return Motion(self.color, self.kind, OPPOSITE[self.direction], self.end, self.start, self.background_seed)


def captions(motion: Motion) -> tuple[str, ...]:
    """Reference captions (paraphrases naming colour, kind and direction)."""
    thing, way = f"{motion.color} {motion.kind}", motion.direction
    return (f"a {thing} moves {way}", f"a {thing} moving to the {way}" if way in ("left", "right")
            else f"a {thing} moving {way}", f"the {thing} goes {way}")


def sample_motion(rng: np.random.Generator, image_size: int) -> Motion:
    """A random shape, direction and straight path that keeps the shape inside the frame."""
    radius = SIZES[SIZE] * image_size / 2
    low, high = radius + 1, image_size - radius - 1
    span = high - low
    direction = DIRECTIONS[rng.integers(len(DIRECTIONS))]
    travel = rng.uniform(MIN_TRAVEL, 1.0) * span
    start_along = rng.uniform(low, high - travel)
    across = rng.uniform(low, high)
    forward = direction in ("right", "down")
    a, b = (start_along, start_along + travel) if forward else (start_along + travel, start_along)
    horizontal = direction in ("left", "right")
    start, end = ((a, across), (b, across)) if horizontal else ((across, a), (across, b))
    return Motion(str(rng.choice(list(COLORS))), str(rng.choice(SHAPES)), direction, start, end,
                  int(rng.integers(2**31)))


def render_clip(motion: Motion, image_size: int, num_frames: int) -> list[np.ndarray]:
    """The clip's frames, RGB uint8 ``[H, W, 3]``, on the same background."""
    frames = []
    for t in np.linspace(0.0, 1.0, num_frames):
        cx = motion.start[0] + t * (motion.end[0] - motion.start[0])
        cy = motion.start[1] + t * (motion.end[1] - motion.start[1])
        scene = Scene("single", (Shape(motion.kind, motion.color, SIZE, float(cx), float(cy)),))
        frames.append(np.asarray(render(scene, np.random.default_rng(motion.background_seed), image_size)))
    return frames


def _check(counts: dict[str, int], image_size: int, num_frames: int, fps: int) -> None:
    for name, value in {**{f"n_{k}": v for k, v in counts.items()}, "num_frames": num_frames, "fps": fps}.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"moving_shapes: {name} must be a positive integer, got {value!r}")
    if counts["test"] % 2:
        raise ValueError(f"moving_shapes: n_test must be even (reversal pairs), got {counts['test']}")
    if not isinstance(image_size, int) or image_size < 32 or image_size % 2:
        raise ValueError(f"moving_shapes: image_size must be an even integer >= 32, got {image_size!r}")


def _motions(split: str, n: int, seed: int, image_size: int) -> list[Motion]:
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    if split != "test":
        return [sample_motion(rng, image_size) for _ in range(n)]
    pairs = [sample_motion(rng, image_size) for _ in range(n // 2)]
    return [m for motion in pairs for m in (motion, motion.reversed())]


def generate_moving_shapes(root: Path, seed: int = 0, n_train: int = 800, n_val: int = 40, n_test: int = 80,
                           image_size: int = 112, num_frames: int = 16, fps: int = 8) -> Path:
    """Generate the clips under ``root`` (idempotent: same arguments and a finished run -> no work)."""
    root = Path(root)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    _check(counts, image_size, num_frames, fps)
    args = {"seed": seed, "n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": image_size,
            "num_frames": num_frames, "fps": fps, "version": FORMAT_VERSION}
    if is_current(root, args):
        return root
    root.mkdir(parents=True, exist_ok=True)
    clear(root, OUTPUTS)
    described = {}
    for split in SPLITS:
        items, described[split] = [], []
        frames = None
        for i, motion in enumerate(_motions(split, counts[split], seed, image_size)):
            path = f"videos/{split}/{i:06d}.mp4"
            if split == "test" and i % 2:  # the second clip of a test pair: the first one's frames reversed
                frames = frames[::-1]
            else:
                frames = render_clip(motion, image_size, num_frames)
            write_mp4(root / path, frames, fps=fps)
            extra = {"direction": motion.direction, "color_kind": f"{motion.color} {motion.kind}"}
            items.append(CaptionedVideo(path, ID_OFFSET[split] + i, captions(motion),
                                        extra if split != "train" else {}))
            described[split].append({"video": path, **asdict(motion)})
        if split == "train":
            write_json(root / "train.json", train_entries(items))
        else:
            write_eval_split(root, split, items)
    write_json(root / "clips.json", described)
    write_manifest(root, args)
    return root
