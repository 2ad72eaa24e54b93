"""The few unavoidable patches to LAVIS 1.0.2 globals, applied idempotently on import.

Each patch names the LAVIS line it fixes. Everything else is done by subclassing and registering.
"""
import lavis.common.optims  # noqa: F401  lr_sched classes register only when this module is imported
