"""Crash-safe training checkpoints: atomic writes, last-K retention, a best copy, RNG capture.

A checkpoint is one ``torch.save`` dict (see ``RunnerEvlgen.training_state``). It is written to a
temporary file in the target folder, flushed and fsynced, then renamed over the target with
``os.replace`` and the folder fsynced, so a reader sees either the previous complete file or the new
complete file, never a partial one. ``checkpoint_latest.pth`` and ``checkpoint_best.pth`` are hard
links to numbered files (``checkpoint_<iteration>.pth``), swapped in the same atomic way, so they
survive the pruning of numbered files beyond the last K.

A save that fails (disk full, permission, quota) raises :class:`CheckpointSaveError` after logging
the path and the free space; the previous ``checkpoint_latest.pth`` stays as it was and nothing is
pruned. :meth:`CheckpointManager.newest_readable` finds what to resume from: the latest, or, if it is
unreadable, the newest readable numbered file.

These files hold python and numpy RNG states (tuples, arrays), so they are read with
``weights_only=False``: only for checkpoints this runner wrote itself, never for files others made.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import numpy as np
import torch
from torch import nn

from lavis_evlgen.common.atomic import TMP_PREFIX, atomic_write, fsync_dir, temp_name

logger = logging.getLogger(__name__)

LATEST = "checkpoint_latest.pth"
BEST = "checkpoint_best.pth"
_NUMBERED = re.compile(r"^checkpoint_(\d+)\.pth$")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` such that ``path`` is never seen half-written.

    A write error (disk full, quota) surfaces as that OSError: torch's zip writer otherwise replaces it
    with a RuntimeError about the file position while closing the archive.
    """
    def write(f: BinaryIO) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as err:
            if isinstance(err.__context__, OSError):
                raise err.__context__ from err
            raise

    atomic_write(path, write)


def atomic_link(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` name the same file as ``src``, replacing ``dst`` atomically.

    Uses a hard link; where the file system has none, a full copy (fsynced) takes its place.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    folder = os.path.dirname(os.path.abspath(dst))
    tmp = temp_name(dst)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    fsync_dir(folder)


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the previous ``checkpoint_latest.pth`` is unchanged."""


def free_space(folder: str | os.PathLike) -> str:
    """Free space on ``folder``'s file system, for error messages (``"? (reason)"`` if unknown)."""
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError as err:
        return f"? ({err})"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read one of this runner's checkpoints onto the CPU; a clear error for a missing or unreadable file.

    ``weights_only=False``: the file holds RNG states (python tuples, numpy state) and was written by
    :class:`CheckpointManager` of this project; third-party weights go through ``weights_only=True``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise RuntimeError(f"checkpoint {path} is unreadable: {err}") from err


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without frozen parameters (buffers are kept, as LAVIS does)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a :func:`trainable_state_dict`; every trainable parameter must be present.

    Raises ValueError naming ``source`` and the offending keys when a trainable parameter is
    missing or the checkpoint holds keys the model does not have.
    """
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    missing_trainable = [k for k in missing if k not in frozen]
    if missing_trainable or unexpected:
        raise ValueError(f"checkpoint {source} does not fit the model: missing trainable "
                         f"{missing_trainable[:8]}, unexpected {list(unexpected)[:8]}")


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch CPU and (if present) CUDA generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only where CUDA is present)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CheckpointManager:
    """Numbered checkpoints in ``folder`` with ``latest`` and ``best`` links and last-K retention."""

    def __init__(self, folder: str | os.PathLike, keep_last_k: int):
        if keep_last_k < 0:
            raise ValueError(f"run.keep_last_k: must be >= 0, got {keep_last_k}")
        self.folder = Path(folder)
        self.keep_last_k = keep_last_k
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(TMP_PREFIX + "*"):
            stale.unlink()

    @property
    def latest_path(self) -> Path:
        return self.folder / LATEST

    @property
    def best_path(self) -> Path:
        return self.folder / BEST

    def numbered(self) -> list[tuple[int, Path]]:
        """``(iteration, path)`` of the numbered checkpoints present, oldest first."""
        found = []
        for p in self.folder.iterdir():
            m = _NUMBERED.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, state: dict[str, Any], iteration: int, is_best: bool = False) -> Path:
        """Write ``checkpoint_<iteration>.pth``, point ``latest`` (and ``best``) at it, prune old ones.

        Raises CheckpointSaveError (logged with the path and the free space) when a write fails; then
        ``latest`` still names the previous checkpoint and no file is pruned.
        """
        path = self.folder / f"checkpoint_{iteration}.pth"
        try:
            atomic_save(state, path)
            atomic_link(path, self.latest_path)
            if is_best:
                atomic_link(path, self.best_path)
        except OSError as err:
            message = (f"could not save the checkpoint of iteration {iteration} to {path}: {err}; free space in "
                       f"{self.folder}: {free_space(self.folder)}; {LATEST} still holds the previous checkpoint")
            logger.error("%s", message)
            raise CheckpointSaveError(message) from err
        self._prune()
        logger.info("saved checkpoint at iteration %d to %s%s", iteration, path, " (best)" if is_best else "")
        return path

    def _prune(self) -> None:
        """Delete numbered files beyond the last K; ``latest`` and ``best`` are links, so they survive."""
        numbered = self.numbered()
        excess = len(numbered) - self.keep_last_k
        for _, old in numbered[:max(excess, 0)]:
            old.unlink()

    def newest_readable(self, check: Callable[[dict[str, Any]], None] = lambda state: None
                        ) -> Optional[tuple[Path, dict[str, Any]]]:
        """``(path, state)`` of the latest checkpoint, or of the newest readable numbered one if the
        latest is missing or unreadable (logged as a warning); None when the folder has no checkpoint.

        ``check(state)`` may raise ValueError to reject a file that loads but is not usable.
        """
        candidates = [self.latest_path] + [p for _, p in reversed(self.numbered())]
        for path in candidates:
            if not path.exists():
                continue
            try:
                state = load_checkpoint(path)
                check(state)
            except (RuntimeError, ValueError, OSError) as err:
                logger.warning("cannot resume from %s (%s); trying the newest older checkpoint", path, err)
                continue
            if path != self.latest_path and self.latest_path.exists():
                logger.warning("%s is unreadable: resuming from %s instead", self.latest_path, path)
            return path, state
        if any(p.exists() for p in candidates):
            raise RuntimeError(f"no readable checkpoint in {self.folder}: every checkpoint file failed to load")
        return None

