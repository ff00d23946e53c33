"""Ray's notices off the console: while ``anonray run`` works, whatever is written to file descriptor 2 (the
notices of Ray's Python loggers, its C++ core worker's E-lines, the lines Ray forwards from its workers) goes to a
log file, and anonray's own log records and progress display go to the console through a copy of the original
stream. The log is written in a private temporary folder and moved at the end into the state folder,
``_anonray/logs/ray-<time>-<pid>.log`` (folder 0700, file 0600: it may name paths), when the run made one; a URI
output's log stays in its temporary folder.

Only the command line uses this; a program calling ``runtime.driver.run`` keeps its streams as they are.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from anonray.layout import STATE_DIR_NAME

LOG_DIR_NAME = "logs"
log = logging.getLogger("anonray")


class RayLog:
    """Where the run's Ray notices are: ``path`` (the temporary file during the run, its final place after)."""

    def __init__(self, state_dir: Path | None) -> None:
        """``state_dir``: the local state folder the log moves to at the end (None: it stays where it is)."""
        self.state_dir = state_dir
        self.folder = Path(tempfile.mkdtemp(prefix="anonray-logs-"))  # 0700
        self.path = self.folder / f"ray-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}.log"

    def open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def settle(self) -> None:
        """Move the log into the state folder's ``logs`` where the run made a state folder; an empty log (or, for
        a local output, one of a run that stopped before making its state folder) is deleted. Never raises: a
        failure leaves the log in its temporary folder and says so (without the path) in anonray's log."""
        try:
            if self.path.stat().st_size == 0 or (self.state_dir is not None and not self.state_dir.is_dir()):
                shutil.rmtree(self.folder, ignore_errors=True)
                return
            if self.state_dir is None:
                return
            logs = self.state_dir / LOG_DIR_NAME
            logs.mkdir(exist_ok=True)
            os.chmod(logs, 0o700)
            final = logs / self.path.name
            shutil.move(self.path, final)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.path = final
        except OSError as err:
            log.warning("Ray's log stays in its temporary folder: %s", type(err).__name__)


def ray_log_for(output: str, is_uri: bool) -> RayLog:
    """The Ray log of a run into ``output`` (a folder, or a URI whose state folder is not local)."""
    return RayLog(None if is_uri else Path(output) / STATE_DIR_NAME)


@contextlib.contextmanager
def ray_notices_to(ray_log: RayLog) -> Iterator[TextIO]:
    """Send file descriptor 2 to the log for the duration; yields the console stream (the original standard
    error), to which the root logger's stream handlers are pointed meanwhile. Settles the log at the end."""
    sys.stderr.flush()
    log_fd = ray_log.open()
    saved = os.dup(2)
    console = os.fdopen(os.dup(saved), "w", buffering=1)
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.__stderr__)]
    previous = [h.setStream(console) for h in handlers]
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield console
    finally:
        with contextlib.suppress(OSError):  # a console that went away (a closed pipe) must not keep the log
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        for handler, stream in zip(handlers, previous, strict=True):
            with contextlib.suppress(OSError):
                handler.flush()
            handler.stream = stream  # not setStream: it flushes the old stream again, raising on a closed pipe
        with contextlib.suppress(OSError):
            console.close()
        ray_log.settle()
