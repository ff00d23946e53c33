"""Progress reporting: a live display on a terminal, periodic plain log lines otherwise.

Only counts and rates are shown: never paths, coordinates or crops.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

log = logging.getLogger("anonray.runtime.progress")


class Progress(Protocol):
    def start(self, total_videos: int) -> None: ...
    def frames_detected(self, frames: int) -> None: ...
    def video_finished(self, status: str, frames: int, footage_seconds: float) -> None: ...
    def finish(self, summary: object) -> None: ...


class NullProgress:
    def start(self, total_videos: int) -> None:
        pass

    def frames_detected(self, frames: int) -> None:
        pass

    def video_finished(self, status: str, frames: int, footage_seconds: float) -> None:
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
        self.started = time.monotonic()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = self.ok + self.failed + self.skipped
        return (f"files {done}/{self.total} (ok {self.ok}, failed {self.failed}, skipped {self.skipped}) | "
                f"detected {self.frames_detected} frames at {self.frames_detected / elapsed:.1f} fps | "
                f"written {self.frames_done} frames | footage done {self.footage_seconds / 3600:.3f} h | "
                f"{elapsed:.0f} s")


class ConsoleProgress(NullProgress):
    """Live one-line display (rich) on a terminal; a log line every ``interval`` seconds otherwise."""

    def __init__(self, interval: float = 10.0, live: bool | None = None):
        self.counters = Counters()
        self.interval = interval
        self.live = sys.stderr.isatty() if live is None else live
        self._last = 0.0
        self._display = None

    def start(self, total_videos: int) -> None:
        self.counters = Counters()
        self.counters.total = total_videos
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._display = Live(self.counters.line(), console=Console(stderr=True), refresh_per_second=4)
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

    def video_finished(self, status: str, frames: int, footage_seconds: float) -> None:
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
        if self._display is not None:
            self._display.stop()
            self._display = None
