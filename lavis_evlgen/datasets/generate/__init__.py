"""Data the embedded default trains and evaluates on, written to disk in LAVIS / COCO formats."""
from lavis_evlgen.datasets.generate.easy_vqa import prepare_easy_vqa
from lavis_evlgen.datasets.generate.photos import write_skimage_photos
from lavis_evlgen.datasets.generate.shapes_caption import generate_shapes_caption, most_frequent_caption

__all__ = ["generate_shapes_caption", "most_frequent_caption", "prepare_easy_vqa", "write_skimage_photos"]
