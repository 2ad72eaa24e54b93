"""Dataset builders registered with LAVIS on import."""
from lavis_evlgen.datasets.builders import caption_folder  # noqa: F401
from lavis_evlgen.datasets.builders import easy_vqa, photos_caption, shapes_caption  # noqa: F401
from lavis_evlgen.datasets.builders import video_caption  # noqa: F401
from lavis_evlgen.datasets.builders import caption_benchmarks, pretrain, vqa_benchmarks  # noqa: F401
