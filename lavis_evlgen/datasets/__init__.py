from lavis_evlgen.datasets import builders  # noqa: F401
