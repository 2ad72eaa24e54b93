"""``skimage_photos``: the real photos shipped inside scikit-image, with captions written for them.

Only images that ``skimage.data`` loads from the installed package (no pooch download) are used;
the greyscale ones are stored as RGB. The captions were written by looking at each image. The set
is evaluation-only: val and test both hold every photo, in COCO caption format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import skimage
import skimage.data
from PIL import Image

from lavis_evlgen.datasets.generate.coco_format import CaptionedImage, write_eval_split
from lavis_evlgen.datasets.generate.manifest import clear, is_current, write_manifest

PHOTOS: dict[str, tuple[Callable[[], np.ndarray], tuple[str, ...]]] = {
    "astronaut": (skimage.data.astronaut, (
        "a smiling woman astronaut in an orange space suit",
        "portrait of an astronaut in an orange suit with an american flag and a space shuttle model behind her",
        "a woman with short hair in an orange spacesuit next to a helmet",
    )),
    "chelsea": (skimage.data.chelsea, (
        "a close up of a tabby cat with green eyes",
        "the face of a brown striped cat looking to the side",
        "a tabby cat with yellow green eyes and a pink nose",
    )),
    "coffee": (skimage.data.coffee, (
        "a cup of espresso on a red saucer with a spoon on a wooden table",
        "a small red and white coffee cup on a saucer on a wooden table",
        "an espresso cup with a metal spoon on a red saucer",
    )),
    "rocket": (skimage.data.rocket, (
        "a white rocket on a launch pad at dusk between tall metal towers",
        "a rocket standing on the launch pad under a dark blue sky with bright lights",
        "a rocket ready for launch surrounded by lattice towers at twilight",
    )),
    "motorcycle": (lambda: skimage.data.stereo_motorcycle()[0], (
        "a red motorcycle parked in a garage",
        "a red and black motorcycle standing on a concrete floor in front of shelves",
        "a red motorbike in a workshop with boxes on metal shelves",
    )),
    "hubble_deep_field": (skimage.data.hubble_deep_field, (
        "a deep space image full of colorful galaxies on a black background",
        "many small galaxies and stars scattered across the dark sky",
        "a telescope photo of distant galaxies in space",
    )),
    "immunohistochemistry": (skimage.data.immunohistochemistry, (
        "a microscope image of stained tissue with brown and blue cells",
        "a stained tissue sample under a microscope with brown glands and blue nuclei",
        "a close up of brown stained cells in a tissue section",
    )),
    "retina": (skimage.data.retina, (
        "a photo of the back of a human eye with red blood vessels",
        "a retina image with branching blood vessels and a bright optic disc",
        "an orange red photograph of the retina on a black background",
    )),
    "camera": (skimage.data.camera, (
        "a black and white photo of a man looking through a camera on a tripod",
        "a man in a dark coat filming with a camera on a tripod in a field",
        "a cameraman standing on grass with buildings in the background",
    )),
    "coins": (skimage.data.coins, (
        "a black and white photo of rows of old coins",
        "ancient coins arranged in rows on a dark background",
        "many old coins with heads and figures on them",
    )),
    "moon": (skimage.data.moon, (
        "a gray close up of the surface of the moon with small craters",
        "a black and white image of a cratered lunar surface",
        "a gray rocky surface with a few craters and bumps",
    )),
    "page": (skimage.data.page, (
        "a page of printed text about region based segmentation",
        "a photo of a book page with a heading and a paragraph of text",
        "black text printed on a gray page",
    )),
    "text": (skimage.data.text, (
        "handwritten math equations on a sheet of paper",
        "a close up black and white photo of handwritten formulas",
        "handwriting on paper seen at an angle",
    )),
    "grass": (skimage.data.grass, (
        "a black and white close up of grass",
        "a patch of grass and small leaves seen from above",
        "a gray texture of grass blades",
    )),
    "gravel": (skimage.data.gravel, (
        "a black and white photo of gravel",
        "many small gray stones seen from above",
        "a close up of crushed rocks",
    )),
    "brick": (skimage.data.brick, (
        "a black and white photo of a brick wall",
        "rows of gray bricks seen at an angle",
        "a close up of a brick surface",
    )),
    "clock": (skimage.data.clock, (
        "a motion blurred photo of a clock on a gray background",
        "a blurry round clock in the middle of a plain gray image",
        "a black and white photo of a moving clock",
    )),
}
OUTPUTS = ["images", "val.json", "val_gt.json", "test.json", "test_gt.json"]
FORMAT_VERSION = 1


def write_skimage_photos(root: Path) -> Path:
    """Write the photos and their captions under ``root`` (idempotent)."""
    root = Path(root)
    args = {"photos": sorted(PHOTOS), "skimage": skimage.__version__, "version": FORMAT_VERSION}
    if is_current(root, args):
        return root
    root.mkdir(parents=True, exist_ok=True)
    clear(root, OUTPUTS)
    (root / "images").mkdir()
    items = []
    for image_id, (name, (load, refs)) in enumerate(PHOTOS.items(), start=1):
        Image.fromarray(load()).convert("RGB").save(root / "images" / f"{name}.png", format="PNG")
        items.append(CaptionedImage(f"images/{name}.png", image_id, refs))
    for split in ("val", "test"):
        write_eval_split(root, split, items)
    write_manifest(root, args)
    return root
