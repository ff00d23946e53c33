"""The book of one run: a row per file as it finishes (written at once, so a killed run can be resumed),
the segment rows, and the summary the command line prints."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from anonray.errors import Failure
from anonray.handoff import RenderResult, VideoDetections
from anonray.ingest.discover import InputFile
from anonray.ingest.probe import video_id_for
from anonray.records.rows import RunContext, failed_video_row, ok_video_row, segment_rows, utc_now
from anonray.records.tables import write_part
from anonray.runtime.progress import Progress
from anonray.store.remote_output import RemoteState
from anonray.types import VideoInfo

log = logging.getLogger("anonray")


@dataclass
class RunSummary:
    run_id: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    ignored: int = 0
    frames: int = 0
    footage_seconds: float = 0.0
    wall_seconds: float = 0.0
    failure_classes: dict[str, int] = field(default_factory=dict)
    manifest_path: Path | str | None = None
    """The run manifest (records/audit.py; its URI for a URI output); None when it could not be written."""
    review_path: Path | str | None = None
    """The review sheet (records/review.py; its URI for a URI output); None when it could not be written."""

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


@dataclass(frozen=True)
class Ingested:
    """When a file's ingest started and how long it took (its row's timings)."""

    file: InputFile
    started: dt.datetime
    seconds: float


class RunLedger:
    """Rows for the videos and segments tables, and the summary, kept as files finish."""

    def __init__(self, run_id: str, ctx: RunContext, progress: Progress, state_dir: Path,
                 remote: RemoteState | None = None, wall_start: float | None = None) -> None:
        """``wall_start``: the run's start (time.perf_counter), from which each output's latency is counted."""
        self.run_id, self.ctx, self.progress = run_id, ctx, progress
        self.wall_start = time.perf_counter() if wall_start is None else wall_start
        self.state_dir, self.remote = state_dir, remote
        self.summary = RunSummary(run_id)
        self.video_rows: list[dict] = []
        self.segment_rows: list[dict] = []
        self.claimed_outputs: set[str] = set()
        """Output paths taken in this run (two inputs never write the same output)."""
        self.render_retries = 0

    def record(self, row: dict) -> None:
        """Keep a finished file's row, and write it at once as a part of its own, so that a run killed
        later (SIGKILL, a lost machine) still tells a rerun which files are done; the run's single part
        replaces these at the end (runtime/run_records.py)."""
        self.video_rows.append(row)
        try:
            part = write_part(self.state_dir, "videos", f"{self.run_id}-{len(self.video_rows):07d}", [row])
            if self.remote is not None:
                self.remote.push(part)
        except OSError as err:  # the end-of-run part still records it
            log.error("run %s: a finished file's row could not be written early: %s", self.run_id,
                      type(err).__name__)

    def fail(self, file: InputFile, failure: Failure, started: dt.datetime, info: VideoInfo | None = None,
             seconds_ingest: float | None = None, retries: int = 0) -> None:
        video_id = info.video_id if info else video_id_for(file.relative_path)
        row = failed_video_row(
            self.ctx, video_id=video_id, path=file.relative_path, error_class=failure.error_class,
            message=failure.message, started=started, info=info, seconds_ingest=seconds_ingest)
        self.record({**row, "retries": retries})
        self.summary.failed += 1
        classes = self.summary.failure_classes
        classes[failure.error_class] = classes.get(failure.error_class, 0) + 1
        log.warning("video %s failed: %s", video_id, failure.error_class)
        self.progress.video_finished("failed", 0, 0.0, file.size_bytes)

    def fail_video(self, video: VideoDetections, ingested: Ingested, failure: Failure, retries: int = 0) -> None:
        """A video that was ingested and detected but has no output."""
        self.fail(ingested.file, failure, ingested.started, video.info, ingested.seconds, retries=retries)

    def succeed(self, video: VideoDetections, result: RenderResult, ingested: Ingested, retries: int) -> None:
        info = video.info
        row = ok_video_row(self.ctx, video, result, started=ingested.started, seconds_ingest=ingested.seconds,
                           latency_seconds=time.perf_counter() - self.wall_start)
        self.record({**row, "retries": retries})
        self.summary.ok += 1
        self.summary.frames += info.frame_count
        self.summary.footage_seconds += info.duration_seconds
        log.info("video %s ok: %d frames", info.video_id, info.frame_count)
        self.progress.video_finished("ok", info.frame_count, info.duration_seconds, info.size_bytes)

    def add_segments(self, video: VideoDetections) -> None:
        self.segment_rows.extend(segment_rows(self.ctx, video))

    def skip(self, previous: dict) -> None:
        """Record an input whose earlier ok output still stands (the row keeps its hashes and counts)."""
        now = utc_now()
        self.video_rows.append({**previous, "run_id": self.run_id, "status": "skipped", "started_utc": now,
                                "finished_utc": now})
        self.claimed_outputs.add(previous["output_path"])
        self.summary.skipped += 1
        self.progress.video_finished("skipped", 0, 0.0, int(previous.get("size_bytes_in") or 0))
