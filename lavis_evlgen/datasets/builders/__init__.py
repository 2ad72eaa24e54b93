"""Dataset builders registered with LAVIS on import."""
from lavis_evlgen.datasets.builders import (  # noqa: F401  importing a module registers its builders
    caption_benchmarks,
    caption_folder,
    easy_vqa,
    photos_caption,
    pretrain,
    shapes_caption,
    video_caption,
    vqa_benchmarks,
)
