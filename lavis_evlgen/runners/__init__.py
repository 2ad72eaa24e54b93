"""Runners registered with LAVIS on import (select with ``run.runner``)."""
from lavis_evlgen.runners import runner_evlgen  # noqa: F401
