"""Render tasks in flight: submitted as videos complete detection, harvested as they finish, resubmitted
when the machinery (not the file) failed, each result recorded in the run's ledger."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import ray

from anonray.config import Config
from anonray.corrections.carry import CarrySource
from anonray.errors import Failure
from anonray.handoff import VideoDetections
from anonray.layout import TMP_DIR_NAME
from anonray.runtime.ledger import Ingested, RunLedger
from anonray.runtime.tasks import TRANSIENT_ERRORS, render_task

log = logging.getLogger("anonray")

RETRIED_ERROR_CLASSES = frozenset({"upload_failed"})
"""Render failures that are the store's, not the file's (a URI output that could not be uploaded): the
render is resubmitted like a TRANSIENT_ERRORS one (at most ``resources.max_retries`` times)."""


@dataclass(frozen=True)
class RenderTarget:
    """Where and how this run's render tasks write (the same for every video of the run)."""

    config: Config
    output_dir: Path | str
    state_dir: Path
    run_id: str
    cpus: float
    spread: int
    """Render slots per video (resources.render_spread): a small run cuts its videos into that many chunks."""


@dataclass(frozen=True)
class RenderJob:
    video: VideoDetections
    ingested: Ingested
    attempt: int


class RenderQueue:
    """The run's render tasks, keyed by their result reference."""

    def __init__(self, target: RenderTarget, ledger: RunLedger, actor_retries,
                 corrected: dict[str, CarrySource] | None = None) -> None:
        """``actor_retries``: () -> (restarts per stage, restarts per video) of the run's actors; ``corrected``:
        per input path, the reviewers' corrections of its current output to carry (corrections/lineage.py)."""
        self.target, self.ledger, self.actor_retries = target, ledger, actor_retries
        self.corrected = corrected or {}
        self.config_json = target.config.canonical_json()
        self.in_flight: dict[ray.ObjectRef, RenderJob] = {}

    def __bool__(self) -> bool:
        return bool(self.in_flight)

    def submit(self, video: VideoDetections, ingested: Ingested) -> None:
        """Render a video whose detection is complete, or record why it will not be rendered."""
        video.carry = self.corrected.get(video.info.relative_path)
        failure = video.failure(self.target.config.input.on_damage)  # damage may render (mask_whole_frame)
        self.ledger.add_segments(video)
        if failure is not None:
            self.ledger.fail_video(video, ingested, failure)
            return
        self._start(RenderJob(video, ingested, attempt=0))

    def _start(self, job: RenderJob) -> None:
        t = self.target
        ref = render_task.options(num_cpus=t.cpus).remote(
            job.video, self.config_json, str(t.output_dir), str(t.state_dir), t.run_id, t.cpus, t.spread)
        self.in_flight[ref] = job

    def harvest(self, timeout: float) -> None:
        """Record every render finished within ``timeout`` seconds; resubmit those worth another try."""
        if not self.in_flight:
            return
        done, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=timeout)
        by_video = self.actor_retries()[1] if done else {}
        for ref in done:
            job = self.in_flight.pop(ref)
            self._finish(ref, job, job.attempt + by_video.get(job.video.info.video_id, 0))

    def _finish(self, ref: ray.ObjectRef, job: RenderJob, retries: int) -> None:
        can_retry = job.attempt < self.target.config.resources.max_retries
        try:
            result = ray.get(ref)
        except TRANSIENT_ERRORS as err:
            if can_retry:
                self._remove_partial_output(job.video.info.video_id)
                self._retry(job, f"lost ({type(err).__name__})")
                return
            result = Failure("worker_lost", f"{type(err).__name__} (after {job.attempt} retries)")
        except Exception as err:  # noqa: BLE001 - not transient: recorded, not retried
            result = Failure("render_error", type(err).__name__)
        if isinstance(result, Failure):
            if result.error_class in RETRIED_ERROR_CLASSES and can_retry:
                self._retry(job, f"failed ({result.error_class})")
            else:
                self.ledger.fail_video(job.video, job.ingested, result, retries=retries)
            return
        self.ledger.succeed(job.video, result, job.ingested, retries)

    def _remove_partial_output(self, video_id: str) -> None:
        """The dead attempt's temporary file."""
        for stale in (self.target.state_dir / TMP_DIR_NAME).glob(f"{video_id}-*"):
            stale.unlink(missing_ok=True)

    def _retry(self, job: RenderJob, why: str) -> None:
        log.warning("video %s: render attempt %d %s; retrying", job.video.info.video_id, job.attempt + 1, why)
        self.ledger.render_retries += 1
        self._start(RenderJob(job.video, job.ingested, job.attempt + 1))
