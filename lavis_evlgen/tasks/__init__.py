"""Tasks registered with LAVIS on import (select with ``run.task``)."""
from lavis_evlgen.tasks import (  # noqa: F401  importing a module registers its tasks
    caption_benchmark,
    captioning,
    gqa,
    scst,
    vqa,
)
