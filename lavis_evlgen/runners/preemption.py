"""Graceful preemption: SIGTERM or SIGUSR1 ends training after the current step with a checkpoint.

SLURM (``--signal``, ``scancel``) and Kubernetes send one of these signals some time before they kill a
job. :class:`PreemptionWatch` records the first one; after every optimizer step (and its periodic save)
the runner sums every rank's record in a one-number all-reduce, so all ranks stop after the same step,
rank 0 writes a checkpoint and every process leaves with :data:`EXIT_PREEMPTED`. A second signal ends the
process at once with status ``128 + signal number`` (the shell's convention for a death by signal), without
a checkpoint.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Optional

logger = logging.getLogger(__name__)

EXIT_PREEMPTED = 4
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Training stopped on a preemption signal after saving a checkpoint."""

    def __init__(self, signal_name: str, checkpoint: str):
        super().__init__(f"preempted by {signal_name}: checkpoint {checkpoint}")
        self.signal_name = signal_name
        self.checkpoint = checkpoint


class PreemptionWatch:
    """Records the first preemption signal; a second one exits immediately. Use as a context manager."""

    def __init__(self, signals: tuple[signal.Signals, ...] = PREEMPTION_SIGNALS):
        self.signals = signals
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @staticmethod
    def name(signum: Optional[int]) -> str:
        return signal.Signals(signum).name if signum else "a preemption signal on another rank"

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.received is not None:
            os.write(2, f"second preemption signal ({self.name(signum)}): exiting now without a checkpoint\n"
                     .encode())
            os._exit(128 + signum)
        self.received = signum
        logger.warning("received %s: finishing the current optimizer step, then saving a checkpoint and exiting "
                       "(a second signal exits at once)", self.name(signum))

    def __enter__(self) -> "PreemptionWatch":
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training outside the main thread: preemption signals are not watched")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

