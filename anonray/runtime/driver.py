"""The Ray Data composition: files -> segments -> decode actors -> detection pool -> per-video
grouping -> tracking + mask + encode -> tables.

Files are taken in waves so that a large archive's first outputs appear long before its last files
are detected: while one wave is decoded and detected, the next wave is ingested and the previous
wave's videos are rendered. Every stage lives in its own module; this file only wires them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray

from anonray.config import Config
from anonray.detect import models, models_in_use
from anonray.ingest.discover import STATE_DIR_NAME, Discovery, InputFile, discover
from anonray.ingest.probe import IngestError, ingest_os_error, probe, video_id_for
from anonray.records import audit
from anonray.records.regions import REGIONS_TABLE
from anonray.records.resume import DoneIndex
from anonray.records.rows import (
    RunContext,
    failed_video_row,
    local_host,
    ok_video_row,
    segment_rows,
    software_versions,
    utc_now,
)
from anonray.records.tables import read_table, table_dir, write_part
from anonray.render.codec.chunked import ChunkJob, ChunkPackets, ChunkRunner, EncodedChunks, failure_message
from anonray.render.outputs import output_relative_path
from anonray.render.video import TMP_DIR_NAME, render_chunk, render_video
from anonray.runtime import ray_scratch
from anonray.runtime.actors import FrameDetectorActor, SegmentDecoder, segment_row
from anonray.runtime.progress import NullProgress, Progress
from anonray.runtime.resources import ResourcePlan, plan_resources, render_spread
from anonray.store import remote_output, storage
from anonray.testing import faults as fault_injection
from anonray.track.collect import DetectionCollector, VideoDetections
from anonray.types import Segment, VideoInfo

log = logging.getLogger("anonray")

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

RETRIED_ERROR_CLASSES = frozenset({"upload_failed"})
"""Render failures that are the store's, not the file's (a URI output that could not be uploaded): the
render is resubmitted like a TRANSIENT_ERRORS one (at most ``resources.max_retries`` times)."""


@dataclass
class RunRequest:
    inputs: list[str]
    output_dir: Path | str
    """A local or mounted folder, or a storage URI (``s3://bucket/prefix``, see remote_output.py)."""
    config: Config
    address: str | None = None
    force: bool = False
    """Reprocess inputs that already have an ok output with the same settings."""
    verify_inputs: bool = False
    """Re-hash inputs that look unchanged before skipping them."""


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
    """The run manifest (audit.py; its URI for a URI output); None when it could not be written."""
    review_path: Path | str | None = None
    """The review sheet (review.py; its URI for a URI output); None when it could not be written."""

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ---------------------------------------------------------------- stage adapters (Ray tasks)

@dataclass
class IngestOutcome:
    file: InputFile
    started: dt.datetime
    seconds: float
    info: VideoInfo | None = None
    segments: list[Segment] = field(default_factory=list)
    error: tuple[str, str] | None = None


def _probe_source(source: Path | str, relative_path: str, target_seconds: float):
    """probe() a local input, or a private local copy of a URI input (storage.py), deleted afterwards."""
    if not storage.is_uri(source):
        return probe(source, relative_path, target_seconds)
    try:
        with storage.staged(str(source)) as (local, remote):
            info, segments = probe(local, relative_path, target_seconds)
    except storage.StorageError as err:
        raise IngestError("storage_error", f"{relative_path}: {err}") from None
    except FileNotFoundError as err:
        raise ingest_os_error(err, relative_path) from None
    # the object's identity, not the staged copy's: what a rerun compares (resume.py); objects have no inode
    return dataclasses.replace(info, source_path=str(source), mtime_ns=remote.mtime_ns, inode=0), segments


@ray.remote(max_retries=3)
def _ingest(file: InputFile, target_seconds: float) -> IngestOutcome:
    started, t0 = utc_now(), time.perf_counter()
    try:
        info, segments = _probe_source(file.source_path, file.relative_path, target_seconds)
        return IngestOutcome(file, started, time.perf_counter() - t0, info, segments)
    except Exception as err:  # noqa: BLE001 - a bad file is a row, not a crash
        error = (getattr(err, "error_class", "ingest_error"), str(err) or type(err).__name__)
        return IngestOutcome(file, started, time.perf_counter() - t0, error=error)


@ray.remote(max_retries=0)  # retried by the driver, which counts the attempts (see _harvest)
def _render(video: VideoDetections, config_json: str, output_dir: str, state_dir: str, run_id: str,
            chunk_cpus: float = 1.0, spread: int = 1):
    from anonray.config import validate_config

    fault_injection.pause("render")
    try:
        config = validate_config(json.loads(config_json))
        output = output_dir if storage.is_uri(output_dir) else Path(output_dir)
        chunks = _chunks_on_ray(chunk_cpus, config.resources.max_retries)
        return "ok", render_video(video, config, output, Path(state_dir), run_id, chunks, spread)
    except Exception as err:  # noqa: BLE001 - deterministic per-file failure: recorded, not retried
        return "failed", (getattr(err, "error_class", "render_error"), str(err) or type(err).__name__)


@ray.remote(num_returns=2)
def _encode_chunk(job: ChunkJob, config_json: str):
    """One chunk of a long video (chunked.py), on any node: (ChunkPackets, payloads), or on a per-file
    failure ((error_class, message), no payloads)."""
    from anonray.config import validate_config

    try:
        return render_chunk(job, validate_config(json.loads(config_json)))
    except Exception as err:  # noqa: BLE001 - a per-file failure, reported to the render task
        return (getattr(err, "error_class", "render_error"), failure_message(err)), np.zeros(0, np.uint8)


def _chunks_on_ray(cpus: float, retries: int) -> ChunkRunner:
    """The render task's ChunkRunner: one Ray task per chunk, on any node (a lost worker retried ``retries``
    times); the render task waits without holding its CPU. The first failure fails the video at once; the
    other chunks are left to finish and be dropped, not cancelled: in Ray 2.60 a ray.cancel that races with a
    task's completion aborts the calling process (task_manager.cc "Tried to complete task that was not
    pending", ray-project/ray#54846), which took down a whole test session here."""

    def run(source: Path, jobs: list[ChunkJob], config: Config) -> EncodedChunks:
        task = _encode_chunk.options(num_cpus=cpus, max_retries=retries)
        config_json = config.canonical_json()
        refs = [task.remote(job, config_json) for job in jobs]
        packets = _gather_chunks(jobs, [described for described, _ in refs], retries)
        payloads: list[ray.ObjectRef | None] = [payload for _, payload in refs]

        def load(k: int) -> np.ndarray:
            ref, payloads[k] = payloads[k], None  # the join asks once per chunk: let Ray free it after
            return ray.get(ref)

        return EncodedChunks(packets, load)

    return run


def _gather_chunks(jobs: list[ChunkJob], described: list[ray.ObjectRef], retries: int) -> list[ChunkPackets]:
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
        if not isinstance(result, ChunkPackets):
            raise job.failed(*result)
        packets.append(result)
    return sorted(packets, key=lambda p: p.index)


@ray.remote(num_cpus=0)
class RestartLog:
    """Counts the run's decode/detection actor restarts; restarted actors report here (actors.py)."""

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


# ---------------------------------------------------------------- the detection dataset

def detection_dataset(videos: list[tuple[VideoInfo, list[Segment]]], config: Config,
                      plan: ResourcePlan, restarts=None) -> ray.data.Dataset:
    """Segments -> decode actors (CPU) -> detection actors (fractional GPU or CPU): rows with boxes.

    An actor whose process dies is restarted, and its task retried, at most ``resources.max_retries``
    times (Ray Data's default is forever); restarted actors report to ``restarts`` (a RestartLog).
    """
    rows = [segment_row(info, s) for info, segments in videos for s in segments]
    config_json = config.canonical_json()
    retries = config.resources.max_retries
    # Ray 2.60 has no named map_batches parameter for these (passing them as remote args is deprecated
    # for Ray 2.64): revisit when the pin moves.
    fault_tolerance = {"max_restarts": retries, "max_task_retries": retries}
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    # Without a limit the decode actors run ahead of detection, their frames piling up in the object store
    # (1.2 GB for 20 s of 1080p on 2 cores, measured), which on a long video could fill it and spill to disk.
    ds.context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=plan.frame_buffer_bytes)
    with warnings.catch_warnings():  # ray is pinned exactly: its deprecation notice is ours to act on, not users'
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        ds = ds.map_batches(
            SegmentDecoder, fn_constructor_kwargs={"config_json": config_json, "restarts": restarts}, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=plan.decode_actors), num_cpus=plan.decode_cpus,
            **fault_tolerance,
        )
        return ds.map_batches(
            FrameDetectorActor,
            fn_constructor_kwargs={"config_json": config_json, "threads": 0 if plan.uses_gpu else 2,
                                   "restarts": restarts, "device": None if plan.uses_gpu else "cpu"},
            batch_size=config.detection.batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan.detect_actors),
            num_cpus=plan.detect_cpus, num_gpus=plan.detect_gpus or None, memory=plan.detect_memory,
            **fault_tolerance,
        )


# ---------------------------------------------------------------- orchestration

def starts_local_ray(address: str | None) -> bool:
    """Whether ``connect_ray`` will start a local instance (rather than use or join a running one)."""
    return not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))


def connect_ray(address: str | None, scratch: ray_scratch.RayScratch | None = None) -> str:
    """Join the cluster at ``address``/RAY_ADDRESS, or start a local instance sized to this machine.

    A local instance writes its session files and spilled objects to ``scratch`` (private folders,
    see ray_scratch.py); a cluster's folders are its operator's business and are left alone.
    """
    if ray.is_initialized():
        return "attached"
    target = address or os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if target:
        ray.init(address=target, **quiet)
        return "cluster"
    ray.init(include_dashboard=False, **quiet, **(scratch.ray_init_kwargs() if scratch else {}))
    return "local"


def _configure_ray_data() -> None:
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False


def prepare_state_dir(output_dir: Path) -> Path:
    state = output_dir / STATE_DIR_NAME
    (state / TMP_DIR_NAME).mkdir(parents=True, exist_ok=True)
    for leftover in (state / TMP_DIR_NAME).iterdir():  # partial outputs of a killed run
        if leftover.is_file():
            leftover.unlink()
    return state


class _Run:
    """The mutable book-keeping of one run: rows for the tables and the summary."""

    def __init__(self, request: RunRequest, progress: Progress):
        self.request = request
        self.config = request.config
        self.progress = progress
        self.run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        self.summary = RunSummary(self.run_id)
        self.video_rows: list[dict] = []
        self.segment_rows: list[dict] = []
        self.claimed_outputs: set[str] = set()
        self.ingest_seconds: dict[str, tuple[dt.datetime, float]] = {}
        self.ctx: RunContext | None = None
        self.state_dir: Path | None = None
        self.output_dir: Path | str | None = None
        self.remote: remote_output.RemoteState | None = None
        """A URI output's state (its local copy is ``state_dir``); None for a local output."""
        self.plan: ResourcePlan | None = None
        self.restart_log = None
        """The run's RestartLog actor (None where it could not start)."""
        self.render_retries = 0
        self.render_spread = 1
        """Render slots per video (resources.render_spread): a small run cuts its videos into that many chunks."""

    def record(self, row: dict) -> None:
        """Keep a finished file's row, and write it at once as a part of its own, so that a run killed
        later (SIGKILL, a lost machine) still tells a rerun which files are done; the run's single part
        replaces these at the end (_write_tables)."""
        self.video_rows.append(row)
        if self.state_dir is None:
            return
        try:
            part = write_part(self.state_dir, "videos", f"{self.run_id}-{len(self.video_rows):07d}", [row])
            if self.remote is not None:
                self.remote.push(part)
        except OSError as err:  # the end-of-run part still records it
            log.error("run %s: a finished file's row could not be written early: %s", self.run_id,
                      type(err).__name__)

    def fail(self, outcome_file: InputFile, error: tuple[str, str], started: dt.datetime,
             info: VideoInfo | None = None, seconds_ingest: float | None = None, retries: int = 0) -> None:
        video_id = info.video_id if info else video_id_for(outcome_file.relative_path)
        row = failed_video_row(
            self.ctx, video_id=video_id, path=outcome_file.relative_path, error_class=error[0],
            message=error[1], started=started, info=info, seconds_ingest=seconds_ingest)
        self.record({**row, "retries": retries})
        self.summary.failed += 1
        self.summary.failure_classes[error[0]] = self.summary.failure_classes.get(error[0], 0) + 1
        log.warning("video %s failed: %s", video_id, error[0])
        self.progress.video_finished("failed", 0, 0.0)

    def skip(self, previous: dict) -> None:
        """Record an input whose earlier ok output still stands (the row keeps its hashes and counts)."""
        now = utc_now()
        self.video_rows.append({**previous, "run_id": self.run_id, "status": "skipped", "started_utc": now,
                                "finished_utc": now})
        self.claimed_outputs.add(previous["output_path"])
        self.summary.skipped += 1
        self.progress.video_finished("skipped", 0, 0.0)


def run(request: RunRequest, progress: Progress | None = None) -> RunSummary:
    """Anonymize every input into ``request.output_dir``; per-file failures become rows, never raise."""
    progress = progress or NullProgress()
    wall = time.perf_counter()
    state = _Run(request, progress)
    uri_output = storage.is_uri(request.output_dir)
    output_dir = str(request.output_dir).rstrip("/") if uri_output else Path(request.output_dir).resolve()
    discovery = discover(request.inputs, output_dir, request.config.input)
    state.summary.ignored = discovery.ignored
    if uri_output:  # the run's state in a private local folder, kept in step with the store
        state.remote = remote_output.open_state(output_dir)
    try:
        return _run_with_state(state, discovery, output_dir, wall)
    finally:
        if state.remote is not None:
            state.remote.close()


def _run_with_state(state: _Run, discovery: Discovery, output_dir: Path | str, wall: float) -> RunSummary:
    """``run`` once the inputs are known and the output can be written."""
    request = state.request
    state_dir = state.remote.local_dir if state.remote is not None else prepare_state_dir(output_dir)
    state.state_dir, state.output_dir = state_dir, output_dir
    model_names = models_in_use(request.config)
    for name in model_names:
        models.model_path(name)  # fail fast (usage error) when weights are missing or altered
    model_ids = models.model_ids(model_names)
    state.ctx = RunContext(state.run_id, request.config, model_ids)
    started = utc_now()
    ray_scratch.remove_orphans(state_dir, request.config.resources)  # spilled frames of a killed run
    scratch = ray_scratch.for_local_ray(state_dir, request.config.resources) \
        if starts_local_ray(request.address) else None
    try:
        ray_mode = connect_ray(request.address, scratch)
        return _process(state, discovery, output_dir, state_dir, started, ray_mode, wall)
    finally:
        if scratch is not None:  # the local Ray this run started: stop it, then delete its files
            ray.shutdown()
            scratch.remove()


def _process(state: _Run, discovery: Discovery, output_dir: Path | str, state_dir: Path, started: dt.datetime,
             ray_mode: str, wall: float) -> RunSummary:
    """The run itself, once Ray is up (see ``run``)."""
    request, progress = state.request, state.progress
    _configure_ray_data()
    node_cpus = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    cluster = ray.cluster_resources()
    plan = plan_resources(cluster, request.config, node_cpus)
    state.plan = plan
    try:
        state.restart_log = RestartLog.remote()
    except Exception as err:  # noqa: BLE001 - restarts then go uncounted; the run does not depend on it
        log.warning("run %s: actor restarts will not be counted: %s", state.run_id, type(err).__name__)
    log.info("run %s: %d file(s), %d ignored; %s", state.run_id, len(discovery.files), discovery.ignored,
             plan.describe())
    progress.start(len(discovery.files))
    todo = _skip_done(state, discovery.files, state_dir, output_dir, request)
    state.render_spread = render_spread(cluster.get("CPU", 0.0), plan.render_cpus, len(todo))

    files_by_video: dict[str, InputFile] = {}
    renders: dict[ray.ObjectRef, tuple[VideoDetections, InputFile]] = {}
    waves = [todo[i:i + request.config.resources.wave_videos]
             for i in range(0, len(todo), request.config.resources.wave_videos)]
    target = request.config.segment.target_seconds
    ingest = _ingest.options(num_cpus=plan.ingest_cpus)
    pending_ingest = [ingest.remote(f, target) for f in waves[0]] if waves else []
    for k in range(len(waves)):
        outcomes: list[IngestOutcome] = ray.get(pending_ingest)
        pending_ingest = [ingest.remote(f, target) for f in waves[k + 1]] if k + 1 < len(waves) else []
        videos = _accept_ingested(state, outcomes, files_by_video)
        if not videos:
            continue
        collector = DetectionCollector(videos)
        try:
            dataset = detection_dataset(videos, request.config, plan, state.restart_log)
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                before = collector.frames_received
                for video in collector.add_batch(batch):
                    _submit_render(state, video, files_by_video, renders)
                progress.frames_detected(collector.frames_received - before)
                _harvest(state, renders, timeout=0)
        except Exception as err:  # noqa: BLE001 - the stage itself broke: this wave's open videos fail, the run goes on
            log.error("detection stage of wave %d failed: %s", k, type(err).__name__)
            error = ("detection_stage_failed", f"the decode/detection stage failed ({type(err).__name__})")
            for video in collector.drain_incomplete():
                _fail_video(state, video, files_by_video, error)
            continue
        for video in collector.drain_incomplete():
            _submit_render(state, video, files_by_video, renders)
    while renders:
        _harvest(state, renders, timeout=1.0)

    state.summary.wall_seconds = time.perf_counter() - wall
    run_row = _write_tables(state, state_dir, started, ray_mode, discovery_count=len(discovery.files))
    if state.restart_log is not None:
        ray.kill(state.restart_log)
    _write_audit(state, state_dir, output_dir, run_row)
    if state.remote is not None:
        _publish_remote(state)
    progress.finish(state.summary)
    return state.summary


def _skip_done(state: _Run, files: list[InputFile], state_dir: Path, output_dir: Path | str,
               request: RunRequest) -> list[InputFile]:
    """The files still to process; the others get a ``skipped`` row (see resume.py)."""
    if request.force:
        return list(files)
    done = DoneIndex(read_table(state_dir, "videos"))
    config_hash = state.config.config_hash()
    todo = []
    for file in files:
        previous = done.find(file.relative_path, file.source_path, output_dir, config_hash,
                             state.ctx.model_ids_json, request.verify_inputs)
        if previous is None:
            todo.append(file)
        else:
            state.skip(previous)
    if len(todo) < len(files):
        log.info("resuming: %d file(s) already done with these settings are skipped", len(files) - len(todo))
    return todo


def _accept_ingested(state: _Run, outcomes: list[IngestOutcome],
                     files_by_video: dict[str, InputFile]) -> list[tuple[VideoInfo, list[Segment]]]:
    videos = []
    for outcome in outcomes:
        if outcome.error or outcome.info is None:
            state.fail(outcome.file, outcome.error or ("ingest_error", "unknown"), outcome.started,
                       seconds_ingest=outcome.seconds)
            continue
        info = outcome.info
        relative_out = output_relative_path(info.relative_path, info, state.config.audio)
        if relative_out in state.claimed_outputs:
            state.fail(outcome.file, ("output_collision",
                                      "another input in this run maps to the same output path"),
                       outcome.started, info, outcome.seconds)
            continue
        state.claimed_outputs.add(relative_out)
        files_by_video[info.video_id] = outcome.file
        state.ingest_seconds[info.video_id] = (outcome.started, outcome.seconds)
        videos.append((info, outcome.segments))
    return videos


def _fail_video(state: _Run, video: VideoDetections, files_by_video: dict[str, InputFile],
                error: tuple[str, str]) -> None:
    """Record a video that will not be rendered: its segments and a failed row."""
    state.segment_rows.extend(segment_rows(state.ctx, video))
    started, seconds = state.ingest_seconds[video.info.video_id]
    state.fail(files_by_video[video.info.video_id], error, started, video.info, seconds)


def _submit_render(state: _Run, video: VideoDetections, files_by_video: dict[str, InputFile],
                   renders: dict) -> None:
    error = video.failure(state.config.input.on_damage)  # damage renders with input.on_damage=mask_whole_frame
    if error:
        _fail_video(state, video, files_by_video, error)
        return
    state.segment_rows.extend(segment_rows(state.ctx, video))
    _start_render(state, video, files_by_video[video.info.video_id], renders, attempt=0)


def _start_render(state: _Run, video: VideoDetections, file: InputFile, renders: dict, attempt: int) -> None:
    ref = _render.options(num_cpus=state.plan.render_cpus).remote(
        video, state.config.canonical_json(), str(state.output_dir), str(state.state_dir), state.run_id,
        state.plan.render_cpus, state.render_spread)
    renders[ref] = (video, file, attempt)


def _actor_retries(state: _Run) -> tuple[dict[str, int], dict[str, int]]:
    """(actor restarts per stage, restarts attributed per video) from the run's RestartLog."""
    if state.restart_log is None:
        return {}, {}
    try:
        return ray.get(state.restart_log.snapshot.remote(), timeout=30)
    except Exception as err:  # noqa: BLE001 - counting must never fail a file
        log.warning("run %s: actor restarts could not be read: %s", state.run_id, type(err).__name__)
        return {}, {}


def _harvest(state: _Run, renders: dict, timeout: float) -> None:
    if not renders:
        return
    done, _ = ray.wait(list(renders), num_returns=len(renders), timeout=timeout)
    by_video = _actor_retries(state)[1] if done else {}
    for ref in done:
        video, file, attempt = renders.pop(ref)
        video_id = video.info.video_id
        started, seconds = state.ingest_seconds[video_id]
        retries = attempt + by_video.get(video_id, 0)
        can_retry = attempt < state.config.resources.max_retries
        try:
            status, payload = ray.get(ref)
        except TRANSIENT_ERRORS as err:
            if can_retry:
                for stale in (state.state_dir / TMP_DIR_NAME).glob(f"{video_id}-*"):  # the dead attempt's file
                    stale.unlink(missing_ok=True)
                _retry_render(state, video, file, renders, attempt, f"lost ({type(err).__name__})")
                continue
            status, payload = "failed", ("worker_lost", f"{type(err).__name__} (after {attempt} retries)")
        except Exception as err:  # noqa: BLE001 - not transient: recorded, not retried
            status, payload = "failed", ("render_error", type(err).__name__)
        if status == "failed" and payload[0] in RETRIED_ERROR_CLASSES and can_retry:
            _retry_render(state, video, file, renders, attempt, f"failed ({payload[0]})")
            continue
        if status == "failed":
            state.fail(file, payload, started, video.info, seconds, retries=retries)
            continue
        state.record({**ok_video_row(state.ctx, video, payload, started=started, seconds_ingest=seconds),
                      "retries": retries})
        state.summary.ok += 1
        state.summary.frames += video.info.frame_count
        state.summary.footage_seconds += video.info.duration_seconds
        log.info("video %s ok: %d frames", video.info.video_id, video.info.frame_count)
        state.progress.video_finished("ok", video.info.frame_count, video.info.duration_seconds)


def _retry_render(state: _Run, video: VideoDetections, file: InputFile, renders: dict, attempt: int,
                  why: str) -> None:
    """Resubmit a render whose attempt ``attempt`` ended in a failure worth another try, and count it."""
    log.warning("video %s: render attempt %d %s; retrying", video.info.video_id, attempt + 1, why)
    state.render_retries += 1
    _start_render(state, video, file, renders, attempt + 1)


def _write_tables(state: _Run, state_dir: Path, started: dt.datetime, ray_mode: str,
                  discovery_count: int) -> dict:
    resources = ray.cluster_resources()
    alive = {n.get("NodeManagerHostname", "") for n in ray.nodes() if n.get("Alive")}
    hosts = sorted(alive or {local_host()})
    summary = state.summary
    run_row = {
        "run_id": state.run_id, "started_utc": started, "finished_utc": utc_now(),
        **software_versions(),
        "model_ids": state.ctx.model_ids_json, "config_json": state.config.canonical_json(),
        "config_hash": state.config.config_hash(), "ray_mode": ray_mode, "hosts": hosts,
        "cluster_cpus": resources.get("CPU", 0.0), "cluster_gpus": resources.get("GPU", 0.0),
        "files_matched": discovery_count, "files_ignored": summary.ignored,
        "videos_ok": summary.ok, "videos_failed": summary.failed, "videos_skipped": summary.skipped,
        "frames_total": summary.frames, "footage_seconds": summary.footage_seconds,
        "wall_seconds": summary.wall_seconds, "exit_code": summary.exit_code,
        "render_retries": state.render_retries, "actor_restarts": sum(_actor_retries(state)[0].values()),
    }
    write_part(state_dir, "videos", state.run_id, state.video_rows)
    for early in table_dir(state_dir, "videos").glob(f"part-{state.run_id}-*.parquet"):  # now in the run's part
        early.unlink(missing_ok=True)
    write_part(state_dir, "segments", state.run_id, state.segment_rows)
    write_part(state_dir, "runs", state.run_id, [run_row])
    return run_row


def _write_audit(state: _Run, state_dir: Path, output_dir: Path | str, run_row: dict) -> None:
    """The review sheet and the run manifest (audit.py); a failure is logged, the outputs stand."""
    if state.remote is not None:
        try:  # the review sheet outlines the regions, which render workers uploaded
            state.remote.pull(REGIONS_TABLE, f"part-{state.run_id}-")
        except OSError as err:
            log.error("run %s: the regions could not be read back: %s", state.run_id, type(err).__name__)
    try:
        node_hosts = {n.get("NodeID", ""): n.get("NodeManagerHostname", "") for n in ray.nodes()}
        state.summary.manifest_path, state.summary.review_path = audit.write_run_records(
            state_dir=state_dir, output_dir=output_dir, run_row=run_row, video_rows=state.video_rows,
            segment_rows=state.segment_rows, config=state.config, model_ids=state.ctx.model_ids,
            node_hosts=node_hosts)
    except Exception as err:  # noqa: BLE001 - the tables are written; the missing manifest is reported
        log.error("run %s: the run manifest could not be written: %s", state.run_id, type(err).__name__)


def _publish_remote(state: _Run) -> None:
    """A URI output: the run's tables, manifest and review sheet go up to the store (remote_output.py)."""
    summary = state.summary
    try:
        state.remote.publish_run(state.run_id, state.config.review.keep_regions)
    except OSError as err:  # the rows written early stay on the store
        log.error("run %s: the run's records could not be uploaded: %s", state.run_id, type(err).__name__)
        summary.manifest_path = summary.review_path = None
        return
    summary.manifest_path = state.remote.uri_of(summary.manifest_path) if summary.manifest_path else None
    summary.review_path = state.remote.uri_of(summary.review_path) if summary.review_path else None
