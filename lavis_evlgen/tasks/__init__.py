"""Tasks registered with LAVIS on import (select with ``run.task``)."""
from lavis_evlgen.tasks import captioning  # noqa: F401
from lavis_evlgen.tasks import scst  # noqa: F401
from lavis_evlgen.tasks import caption_benchmark, gqa, vqa  # noqa: F401
