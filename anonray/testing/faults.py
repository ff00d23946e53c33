"""Test hooks: hold a stage until a test has killed its process (tests/test_retries.py), refuse to
read marked files (tests/test_broken_inputs.py; CI runs as root, where ``chmod 000`` changes nothing), hang
the ingest or the decoding of marked files (the same test) and break uploads of marked outputs (tests/test_s3.py).

Does nothing unless ``$ANONRAY_TEST_PAUSE_DIR`` is set (only tests set it; Ray workers inherit it
from the driver that starts a local Ray). Then a process reaching ``pause(stage)`` for a stage named
in ``$ANONRAY_TEST_PAUSE_STAGES`` writes ``<dir>/<stage>-<pid>.pid`` and waits until the test
writes ``<dir>/<stage>.killed`` (after killing one such process by its pid), at most ``MAX_WAIT_S``.
So the test kills a process that is certainly in the middle of a task, and retries run on.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

PAUSE_DIR_ENV = "ANONRAY_TEST_PAUSE_DIR"
PAUSE_STAGES_ENV = "ANONRAY_TEST_PAUSE_STAGES"
MAX_WAIT_S = 120.0
DENY_READ_ENV = "ANONRAY_TEST_DENY_READ"
"""A marker: files whose name contains it cannot be read (unset: every file can)."""


def is_marked(name: str, marker_env: str) -> bool:
    """Whether a test marked this name: it contains the marker that ``$marker_env`` holds (unset: no name is)."""
    marker = os.environ.get(marker_env)
    return bool(marker) and marker in name


def check_read_allowed(path: Path) -> None:
    """Raise the PermissionError a file without read permission gives, for files a test marked."""
    if is_marked(path.name, DENY_READ_ENV):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))


def pause(stage: str) -> None:
    folder = os.environ.get(PAUSE_DIR_ENV)
    if not folder or stage not in os.environ.get(PAUSE_STAGES_ENV, "").split(","):
        return
    where = Path(folder)
    released = where / f"{stage}.killed"
    if released.exists():
        return
    announce = where / f".{stage}-{os.getpid()}.tmp"
    announce.write_text(str(os.getpid()))
    announce.replace(where / f"{stage}-{os.getpid()}.pid")  # the test never reads a half-written pid
    deadline = time.monotonic() + MAX_WAIT_S
    while not released.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


FAIL_UPLOAD_ENV = "ANONRAY_TEST_FAIL_UPLOAD"
"""A marker: uploads to keys whose last part contains it fail after the upload has begun (unset: none fail)."""


def check_upload_allowed(key: str) -> None:
    """Raise the OSError of a connection lost mid-upload, for keys a test marked."""
    if is_marked(key.rsplit("/", 1)[-1], FAIL_UPLOAD_ENV):
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer (injected)")


HANG_READ_ENV = "ANONRAY_TEST_HANG_READ"
"""A marker: ingest's reading of files whose name contains it hangs (for an hour) at its start (unset: none)."""
HANG_DECODE_ENV = "ANONRAY_TEST_HANG_DECODE"
"""A marker: decoding files whose name contains it hangs (for an hour) before the first packet (unset: none)."""
HANG_SECONDS = 3600.0


def hang_if_marked(path: Path, marker_env: str) -> None:
    """Block like a reader stuck on damaged data or a dead mount, for files a test marked (stall_guard.py's case)."""
    if is_marked(path.name, marker_env):
        time.sleep(HANG_SECONDS)


PAUSED_POINTS = frozenset({"decode", "detect", "render"})


def reach(point: str, subject: str | os.PathLike | None = None) -> None:
    """The fault, if any, a test set up for ``point`` (called through anonray.fault_hooks.fault_point)."""
    if point in PAUSED_POINTS:
        pause(point)
    elif point == "read":
        check_read_allowed(Path(subject))
        hang_if_marked(Path(subject), HANG_READ_ENV)
    elif point == "decode_source":
        hang_if_marked(Path(subject), HANG_DECODE_ENV)
    elif point == "upload":
        check_upload_allowed(str(subject))
    else:
        raise ValueError(f"unknown fault point {point!r}")
