"""Dataset builders registered with LAVIS on import."""
from lavis_evlgen.datasets.builders import caption_folder  # noqa: F401
