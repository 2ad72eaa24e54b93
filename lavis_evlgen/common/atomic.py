"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then renamed."""
from __future__ import annotations

import os
from typing import BinaryIO, Callable

TMP_PREFIX = ".tmp-"


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: str | os.PathLike) -> str:
    """A temporary name next to ``path``, private to this process, starting with TMP_PREFIX."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f"{TMP_PREFIX}{name}.{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a private temporary file, then replace ``path`` with it in one step.

    A reader sees the old file or the new one, never a half-written one, even if the process dies.
    """
    path = os.path.abspath(os.fspath(path))
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
