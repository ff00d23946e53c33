"""Progress reporting: a live display on a terminal, periodic plain log lines otherwise.

Only counts and rates are shown: never paths, coordinates or crops.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol, TextIO

log = logging.getLogger("anonray.runtime.progress")


class Progress(Protocol):
    def start(self, total_videos: int, total_bytes: int = 0) -> None: ...
    def frames_detected(self, frames: int) -> None: ...
    def video_finished(self, status: str, frames: int, footage_seconds: float, size_bytes: int = 0) -> None: ...
    def finish(self, summary: object) -> None: ...


class NullProgress:
    def start(self, total_videos: int, total_bytes: int = 0) -> None:
        pass

    def frames_detected(self, frames: int) -> None:
        pass

    def video_finished(self, status: str, frames: int, footage_seconds: float, size_bytes: int = 0) -> None:
        pass

    def finish(self, summary: object) -> None:
        pass


class Counters:
    """What both displays show."""

    def __init__(self) -> None:
        self.total = 0
        self.ok = 0
        self.failed = 0
        self.skipped = 0
        self.frames_detected = 0
        self.frames_done = 0
        self.footage_seconds = 0.0
        self.total_bytes = 0
        self.bytes_done = 0
        self.started = time.monotonic()

    def seconds_left(self, elapsed: float) -> float | None:
        """The time left at the rate so far: by input bytes where the files' sizes are known, else by files;
        None until a file has finished (skipped files, done at once, do not count toward the rate) and once
        every file has."""
        processed = self.ok + self.failed
        remaining = self.total - processed - self.skipped
        if processed == 0 or remaining <= 0:
            return None
        if self.total_bytes and self.bytes_done:
            return elapsed * max(self.total_bytes - self.bytes_done, 0) / self.bytes_done
        return elapsed * remaining / processed

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = self.ok + self.failed + self.skipped
        left = self.seconds_left(elapsed)
        return (f"files {done}/{self.total} (ok {self.ok}, failed {self.failed}, skipped {self.skipped}) | "
                f"detected {self.frames_detected} frames at {self.frames_detected / elapsed:.1f} fps | "
                f"written {self.frames_done} frames | footage done {self.footage_seconds / 3600:.3f} h | "
                f"{elapsed:.0f} s" + (f", about {_duration(left)} left" if left is not None else ""))


def _duration(seconds: float) -> str:
    """'42 s', '7 min', '3.2 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ConsoleProgress(NullProgress):
    """Live one-line display (rich) on a terminal; a log line every ``interval`` seconds otherwise."""

    def __init__(self, interval: float = 10.0, live: bool | None = None, stream: TextIO | None = None):
        """``stream``: where the live display goes (default sys.stderr; console.py passes the console's own
        stream while Ray's notices go to a file)."""
        self.counters = Counters()
        self.interval = interval
        self.stream = stream
        self.live = (stream or sys.stderr).isatty() if live is None else live
        self._last = 0.0
        self._display = None
        self._rerouted: list[tuple[logging.StreamHandler, TextIO]] = []

    def start(self, total_videos: int, total_bytes: int = 0) -> None:
        self.counters = Counters()
        self.counters.total, self.counters.total_bytes = total_videos, total_bytes
        if self.live:
            from rich.console import Console
            from rich.file_proxy import FileProxy
            from rich.live import Live

            stream = self.stream or sys.stderr
            console = Console(file=stream)
            # no redirect of sys.stdout/sys.stderr: Ray's lines must keep going where runtime/console.py sends
            # them; anonray's own log lines go through the display's console, above the live line
            self._display = Live(self.counters.line(), console=console, refresh_per_second=4,
                                 redirect_stdout=False, redirect_stderr=False)
            handlers = [h for h in logging.getLogger().handlers
                        if isinstance(h, logging.StreamHandler) and h.stream is stream]
            self._rerouted = [(h, h.setStream(FileProxy(console, stream))) for h in handlers]
            self._display.start()
        else:
            log.info("progress: %s", self.counters.line())

    def _update(self, force: bool = False) -> None:
        if self._display is not None:
            self._display.update(self.counters.line())
            return
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            log.info("progress: %s", self.counters.line())

    def frames_detected(self, frames: int) -> None:
        self.counters.frames_detected += frames
        self._update()

    def video_finished(self, status: str, frames: int, footage_seconds: float, size_bytes: int = 0) -> None:
        if status == "skipped":  # done before the run: out of the estimate
            self.counters.total_bytes -= size_bytes
        else:
            self.counters.bytes_done += size_bytes
        if status == "ok":
            self.counters.ok += 1
            self.counters.frames_done += frames
            self.counters.footage_seconds += footage_seconds
        elif status == "failed":
            self.counters.failed += 1
        elif status == "skipped":
            self.counters.skipped += 1
        self._update()

    def finish(self, summary: object) -> None:
        self._update(force=True)
        self.close()

    def close(self) -> None:
        """Stop the live display (also where the run ended in an exception); idempotent."""
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted = []
        if self._display is not None:
            self._display.stop()
            self._display = None
