"""The Ray tasks and the one small actor of a run: ingest a file, render a video, encode a chunk, count
actor restarts. Each is a thin adapter: the work lives in the stage packages."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray

from anonray.config import Config, validate_config
from anonray.errors import Failure
from anonray.fault_hooks import fault_point
from anonray.handoff import RenderResult, VideoDetections
from anonray.ingest.discover import InputFile
from anonray.ingest.probe import IngestError, ingest_os_error, probe
from anonray.records.rows import utc_now
from anonray.render.codec.chunked import ChunkJob, ChunkPackets, ChunkRunner, EncodedChunks, chunk_failure
from anonray.render.video import render_chunk, render_video
from anonray.store import storage
from anonray.types import Segment, VideoInfo

TRANSIENT_ERRORS = (
    ray.exceptions.WorkerCrashedError,  # the worker process died (killed, crashed, preempted)
    ray.exceptions.OutOfMemoryError,  # Ray's memory monitor killed it
    ray.exceptions.NodeDiedError,  # its node left the cluster
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.ObjectLostError,  # an argument or result was lost with its node
    ray.exceptions.RayActorError,
)
"""Failures of the machinery, not of the file: a render task that ends with one of these is resubmitted
(at most ``resources.max_retries`` times); any other failure is deterministic and recorded at once."""


@dataclass
class IngestOutcome:
    """What ingesting one file gave: its description and segments, or why it failed."""

    file: InputFile
    started: dt.datetime
    seconds: float
    info: VideoInfo | None = None
    segments: list[Segment] = field(default_factory=list)
    failure: Failure | None = None


def probe_source(source: Path | str, relative_path: str, target_seconds: float,
                 stall_seconds: float = 0.0) -> tuple[VideoInfo, list[Segment]]:
    """probe() a local input, or a private local copy of a URI input (store/storage.py), deleted afterwards;
    the reading of the local file under the stall limit (the download has its own retries and time-outs)."""
    if not storage.is_uri(source):
        return probe(source, relative_path, target_seconds, stall_seconds)
    try:
        with storage.staged(str(source)) as (local, remote):
            info, segments = probe(local, relative_path, target_seconds, stall_seconds)
    except storage.StorageError as err:
        raise IngestError("storage_error", f"{relative_path}: {err}") from None
    except FileNotFoundError as err:
        raise ingest_os_error(err, relative_path) from None
    # the object's identity, not the staged copy's: what a rerun compares (resume.py); objects have no inode
    return dataclasses.replace(info, source_path=str(source), mtime_ns=remote.mtime_ns, inode=0), segments


@ray.remote(max_retries=3)
def ingest_task(file: InputFile, target_seconds: float, stall_seconds: float = 0.0) -> IngestOutcome:
    started, t0 = utc_now(), time.perf_counter()
    try:
        info, segments = probe_source(file.source_path, file.relative_path, target_seconds, stall_seconds)
        return IngestOutcome(file, started, time.perf_counter() - t0, info, segments)
    except Exception as err:  # noqa: BLE001 - a bad file is a row, not a crash
        return IngestOutcome(file, started, time.perf_counter() - t0, failure=Failure.of(err, "ingest_error"))


@ray.remote(max_retries=0)  # retried by the driver, which counts the attempts (runtime/renders.py)
def render_task(video: VideoDetections, config_json: str, output_dir: str, state_dir: str, run_id: str,
                chunk_cpus: float = 1.0, spread: int = 1) -> RenderResult | Failure:
    fault_point("render")
    try:
        config = validate_config(json.loads(config_json))
        output = output_dir if storage.is_uri(output_dir) else Path(output_dir)
        chunks = chunks_on_ray(chunk_cpus, config.resources.max_retries)
        return render_video(video, config, output, Path(state_dir), run_id, chunks, spread)
    except Exception as err:  # noqa: BLE001 - deterministic per-file failure: recorded, not retried
        return Failure.of(err, "render_error")


@ray.remote(num_returns=2)
def encode_chunk_task(job: ChunkJob, config_json: str) -> tuple[ChunkPackets | Failure, np.ndarray]:
    """One chunk of a long video (render/codec/chunked.py), on any node: (ChunkPackets, payloads), or on a
    per-file failure (Failure, no payloads)."""
    try:
        return render_chunk(job, validate_config(json.loads(config_json)))
    except Exception as err:  # noqa: BLE001 - a per-file failure, reported to the render task
        return chunk_failure(err), np.zeros(0, np.uint8)


def chunks_on_ray(cpus: float, retries: int) -> ChunkRunner:
    """The render task's ChunkRunner: one Ray task per chunk, on any node (a lost worker retried ``retries``
    times); the render task waits without holding its CPU. The first failure fails the video at once; the
    other chunks are left to finish and be dropped, not cancelled: in Ray 2.60 a ray.cancel that races with a
    task's completion aborts the calling process (task_manager.cc "Tried to complete task that was not
    pending", ray-project/ray#54846)."""

    def run(source: Path, jobs: list[ChunkJob], config: Config) -> EncodedChunks:
        task = encode_chunk_task.options(num_cpus=cpus, max_retries=retries)
        config_json = config.canonical_json()
        refs = [task.remote(job, config_json) for job in jobs]
        packets = gather_chunks(jobs, [described for described, _ in refs], retries)
        payloads: list[ray.ObjectRef | None] = [payload for _, payload in refs]

        def load(k: int) -> np.ndarray:
            ref, payloads[k] = payloads[k], None  # the join asks once per chunk: let Ray free it after
            return ray.get(ref)

        return EncodedChunks(packets, load)

    return run


def gather_chunks(jobs: list[ChunkJob], described: list[ray.ObjectRef], retries: int) -> list[ChunkPackets]:
    """Every chunk's packets, waited for as they finish; the first failure raises ChunkError."""
    index = {ref: k for k, ref in enumerate(described)}
    packets: list[ChunkPackets] = []
    pending = list(described)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        job = jobs[index[done[0]]]
        try:
            result = ray.get(done[0])
        except TRANSIENT_ERRORS as err:
            raise job.failed("worker_lost", f"{type(err).__name__} (after {retries} retries)") from None
        if isinstance(result, Failure):
            raise job.failed(result.error_class, result.message)
        packets.append(result)
    return sorted(packets, key=lambda p: p.index)


@ray.remote(num_cpus=0)
class RestartLog:
    """Counts the run's decode/detection actor restarts; restarted actors report here (runtime/actors.py)."""

    def __init__(self):
        self.restarts: dict[str, int] = {}
        self.videos: dict[str, int] = {}

    def restarted(self, stage: str) -> None:
        self.restarts[stage] = self.restarts.get(stage, 0) + 1

    def retried(self, video_ids: list[str]) -> None:
        """The videos in the first batch a restarted actor processed (most likely the retried one)."""
        for video_id in video_ids:
            self.videos[video_id] = self.videos.get(video_id, 0) + 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.restarts), dict(self.videos)
