"""One writer per output folder: ``anonray run`` and ``anonray apply`` hold ``_anonray/lock`` while they write.

An advisory lock (``fcntl.flock``) on a file in the state folder: the kernel drops it when the holder
exits, however it exits, so a killed run never leaves the folder locked. The file names which command
holds it and since when (no path, no personal data).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE_NAME = "lock"


class OutputLocked(RuntimeError):
    """Another anonray command is writing this output folder."""


@contextlib.contextmanager
def output_lock(state_dir: Path, holder: str) -> Iterator[None]:
    """Hold the output folder's lock for the block; raise OutputLocked at once when another process holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another anonray command"
            raise OutputLocked(f"the output folder is being written by {held_by}; wait for it to finish "
                               "(one run or apply at a time per output folder)") from None
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"anonray {holder} (pid {os.getpid()}, since {stamp})\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
