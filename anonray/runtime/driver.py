"""The run: files -> segments -> decode actors -> detection pool -> per-video grouping -> render tasks
(tracking, masks, encoding, QA) -> tables.

Files are taken in waves so that a large archive's first outputs appear long before its last files are
detected: while one wave is decoded and detected, the next is ingested and the previous one rendered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import ray

from anonray.config import Config
from anonray.corrections.lineage import carry_sources
from anonray.detect import models
from anonray.detect.frame_detector import detection_precision
from anonray.detect.selection import models_in_use
from anonray.errors import Failure
from anonray.ingest.discover import Discovery, InputFile, discover
from anonray.ingest.probe import video_id_for
from anonray.layout import STATE_DIR_NAME, TMP_DIR_NAME
from anonray.records.resume import DoneIndex
from anonray.records.rows import RunContext, new_run_id, utc_now
from anonray.records.sources import write_sources
from anonray.records.tables import read_table
from anonray.render.outputs import output_relative_path
from anonray.runtime import ray_scratch
from anonray.runtime.datasets import configure_ray_data, detection_dataset
from anonray.runtime.ledger import Ingested, RunLedger, RunSummary
from anonray.runtime.progress import NullProgress, Progress
from anonray.runtime.renders import RenderQueue, RenderTarget
from anonray.runtime.resources import ResourcePlan, plan_resources, render_spread
from anonray.runtime.run_records import publish_remote, write_audit, write_tables
from anonray.runtime.session import connect_ray, starts_local_ray
from anonray.runtime.tasks import IngestOutcome, RestartLog, ingest_task
from anonray.runtime.waves import plan_waves
from anonray.store import remote_output, storage
from anonray.store.output_lock import output_lock
from anonray.track.collect import DetectionCollector
from anonray.types import Segment, VideoInfo

log = logging.getLogger("anonray")

@dataclass
class RunRequest:
    inputs: list[str]
    output_dir: Path | str
    """A local or mounted folder, or a storage URI (``s3://bucket/prefix``, see store/remote_output.py)."""
    config: Config
    address: str | None = None
    force: bool = False
    """Reprocess inputs that already have an ok output with the same settings."""
    verify_inputs: bool = False
    """Re-hash inputs that look unchanged before skipping them."""


@dataclass
class RunSetting:
    """What the run works with once its output folder is known and Ray is up."""

    request: RunRequest
    ledger: RunLedger
    output_dir: Path | str
    plan: ResourcePlan
    restart_log: object | None
    """The run's RestartLog actor (None where it could not start)."""
    cluster_cpus: float
    """The cluster's CPUs when the run planned its pools."""

    @property
    def config(self) -> Config:
        return self.request.config

    def actor_retries(self) -> tuple[dict[str, int], dict[str, int]]:
        """(actor restarts per stage, restarts attributed per video) from the run's RestartLog."""
        if self.restart_log is None:
            return {}, {}
        try:
            return ray.get(self.restart_log.snapshot.remote(), timeout=30)
        except Exception as err:  # noqa: BLE001 - counting must never fail a file
            log.warning("run %s: actor restarts could not be read: %s", self.ledger.run_id, type(err).__name__)
            return {}, {}


def prepare_state_dir(output_dir: Path) -> Path:
    state = output_dir / STATE_DIR_NAME
    (state / TMP_DIR_NAME).mkdir(parents=True, exist_ok=True)
    for leftover in (state / TMP_DIR_NAME).iterdir():  # partial outputs of a killed run
        if leftover.is_file():
            leftover.unlink()
    return state


def run(request: RunRequest, progress: Progress | None = None) -> RunSummary:
    """Anonymize every input into ``request.output_dir``; per-file failures become rows, never raise."""
    progress = progress or NullProgress()
    wall = time.perf_counter()
    run_id = new_run_id()
    uri_output = storage.is_uri(request.output_dir)
    output_dir = str(request.output_dir).rstrip("/") if uri_output else Path(request.output_dir).resolve()
    discovery = discover(request.inputs, output_dir, request.config.input)
    remote = remote_output.open_state(output_dir) if uri_output else None  # the run's state, kept in step
    try:
        held = contextlib.ExitStack()  # a local output folder: one writer at a time (run or apply)
        if remote is None:
            held.enter_context(output_lock(output_dir / STATE_DIR_NAME, "run"))
        with held:
            return _run_locked(request, discovery, output_dir, remote, RunStart(run_id, wall, progress))
    finally:
        if remote is not None:
            remote.close()


@dataclass(frozen=True)
class RunStart:
    run_id: str
    wall: float
    """time.perf_counter() at the run's start."""
    progress: Progress


def _run_locked(request: RunRequest, discovery: Discovery, output_dir: Path | str,
                remote: remote_output.RemoteState | None, start: RunStart) -> RunSummary:
    """``run`` once its output folder is held: state folder, models checked, the ledger, then Ray."""
    state_dir = remote.local_dir if remote is not None else prepare_state_dir(output_dir)
    model_names = models_in_use(request.config)
    for name in model_names:
        models.model_path(name)  # fail fast (usage error) when weights are missing or altered
    ctx = RunContext(start.run_id, request.config, models.model_ids(model_names))
    ledger = RunLedger(start.run_id, ctx, start.progress, state_dir, remote, wall_start=start.wall)
    ledger.summary.ignored = discovery.ignored
    return _run_on_ray(request, ledger, discovery, output_dir, start.wall)


def _run_on_ray(request: RunRequest, ledger: RunLedger, discovery: Discovery, output_dir: Path | str,
                wall: float) -> RunSummary:
    """``run`` once the output can be written: Ray started (and stopped) or joined around the run."""
    started = utc_now()
    resources = request.config.resources
    ray_scratch.remove_orphans(ledger.state_dir, resources)  # spilled frames of a killed run
    scratch = ray_scratch.for_local_ray(ledger.state_dir, resources) if starts_local_ray(request.address) else None
    try:
        ray_mode = connect_ray(request.address, scratch)
        setting = _set_up(request, ledger, output_dir, discovery)
        _process(setting, discovery.files)
        ledger.summary.wall_seconds = time.perf_counter() - wall
        _close(setting, started, ray_mode, discovery.files)
        return ledger.summary
    finally:
        if scratch is not None:  # the local Ray this run started: stop it, then delete its files
            ray.shutdown()
            scratch.remove()


def _set_up(request: RunRequest, ledger: RunLedger, output_dir: Path | str, discovery: Discovery) -> RunSetting:
    configure_ray_data()
    node_cpus = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    cluster = ray.cluster_resources()
    plan = plan_resources(cluster, request.config, node_cpus)
    try:
        restart_log = RestartLog.remote()
    except Exception as err:  # noqa: BLE001 - restarts then go uncounted; the run does not depend on it
        log.warning("run %s: actor restarts will not be counted: %s", ledger.run_id, type(err).__name__)
        restart_log = None
    log.info("run %s: %d file(s), %d ignored; %s", ledger.run_id, len(discovery.files), discovery.ignored,
             plan.describe())
    return RunSetting(request, ledger, output_dir, plan, restart_log, cluster.get("CPU", 0.0))


def _process(setting: RunSetting, files: list[InputFile]) -> None:
    """The wave loop: ingest wave k+1 while wave k is decoded and detected and finished videos render."""
    ledger, config, plan = setting.ledger, setting.config, setting.plan
    ledger.progress.start(len(files), sum(f.size_bytes for f in files))
    videos = read_table(ledger.state_dir, "videos")  # the earlier runs' rows: what is done, what was corrected
    todo = _skip_done(setting, files, videos)
    spread = render_spread(setting.cluster_cpus, plan.render_cpus, len(todo))
    corrected = {} if ledger.remote is not None else carry_sources(
        videos, read_table(ledger.state_dir, "runs"), read_table(ledger.state_dir, "corrections"))
    renders = RenderQueue(RenderTarget(config, setting.output_dir, ledger.state_dir, ledger.run_id,
                                       plan.render_cpus, spread), ledger, setting.actor_retries, corrected)
    ingested: dict[str, Ingested] = {}
    waves = plan_waves(todo, config.resources.wave_videos, config.resources.wave_bytes)
    ingest = ingest_task.options(num_cpus=plan.ingest_cpus)
    ingest_args = (config.segment.target_seconds, config.resources.stall_seconds)
    pending = [ingest.remote(f, *ingest_args) for f in waves[0]] if waves else []
    for k in range(len(waves)):
        outcomes: list[IngestOutcome] = ray.get(pending)
        pending = [ingest.remote(f, *ingest_args) for f in waves[k + 1]] \
            if k + 1 < len(waves) else []
        videos = _accept_ingested(setting, outcomes, ingested)
        if videos:
            _detect_wave(setting, k, videos, ingested, renders)
    while renders:
        renders.harvest(timeout=1.0)


def _detect_wave(setting: RunSetting, k: int, videos: list[tuple[VideoInfo, list[Segment]]],
                 ingested: dict[str, Ingested], renders: RenderQueue) -> None:
    """Stream one wave through decoding and detection; each video renders as soon as it is complete."""
    ledger = setting.ledger
    collector = DetectionCollector(videos)
    try:
        dataset = detection_dataset(videos, setting.config, setting.plan, setting.restart_log)
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            before = collector.frames_received
            for video in collector.add_batch(batch):
                renders.submit(video, ingested[video.info.video_id])
            ledger.progress.frames_detected(collector.frames_received - before)
            renders.harvest(timeout=0)
    except Exception as err:  # noqa: BLE001 - the stage itself broke: this wave's open videos fail, the run goes on
        log.error("detection stage of wave %d failed: %s", k, type(err).__name__)
        failure = Failure("detection_stage_failed", f"the decode/detection stage failed ({type(err).__name__})")
        for video in collector.drain_incomplete():
            ledger.add_segments(video)
            ledger.fail_video(video, ingested[video.info.video_id], failure)
        return
    for video in collector.drain_incomplete():
        renders.submit(video, ingested[video.info.video_id])


def _close(setting: RunSetting, started: dt.datetime, ray_mode: str, files: list[InputFile]) -> None:
    """Tables, the inputs' sources, manifest and review sheet, and for a URI output their upload."""
    ledger = setting.ledger
    files_matched = len(files)
    if ledger.remote is None:  # what `anonray apply` renders from (records/sources.py); kept with the output
        write_sources(ledger.state_dir, ledger.run_id,
                      [(video_id_for(f.relative_path), f.relative_path, str(f.source_path), str(f.root))
                       for f in files])
    precision = detection_precision(setting.config, "cuda" if setting.plan.uses_gpu else "cpu")
    plan = setting.plan
    run_row = write_tables(ledger, setting.config, started, ray_mode, files_matched,
                           lambda: sum(setting.actor_retries()[0].values()), precision,
                           plan.detect_actors * plan.detect_gpus)
    if setting.restart_log is not None:
        ray.kill(setting.restart_log)
    write_audit(ledger, setting.config, setting.output_dir, run_row)
    if ledger.remote is not None:
        publish_remote(ledger, ledger.remote, setting.config.review.keep_regions)
    ledger.progress.finish(ledger.summary)


def _skip_done(setting: RunSetting, files: list[InputFile], videos: pa.Table) -> list[InputFile]:
    """The files still to process; the others get a ``skipped`` row (see records/resume.py)."""
    request, ledger = setting.request, setting.ledger
    if request.force:
        return list(files)
    done = DoneIndex(videos)
    config_hash = setting.config.config_hash()
    todo = []
    for file in files:
        previous = done.find(file.relative_path, file.source_path, setting.output_dir, config_hash,
                             ledger.ctx.model_ids_json, request.verify_inputs)
        if previous is None:
            todo.append(file)
        else:
            ledger.skip(previous)
    if len(todo) < len(files):
        log.info("resuming: %d file(s) already done with these settings are skipped", len(files) - len(todo))
    return todo


def _accept_ingested(setting: RunSetting, outcomes: list[IngestOutcome],
                     ingested: dict[str, Ingested]) -> list[tuple[VideoInfo, list[Segment]]]:
    """The ingested videos to detect; failed files and output collisions get their rows."""
    ledger, videos = setting.ledger, []
    for outcome in outcomes:
        if outcome.failure or outcome.info is None:
            ledger.fail(outcome.file, outcome.failure or Failure("ingest_error", "unknown"), outcome.started,
                        seconds_ingest=outcome.seconds)
            continue
        info = outcome.info
        relative_out = output_relative_path(info.relative_path, info, setting.config.audio)
        if relative_out in ledger.claimed_outputs:
            collision = Failure("output_collision", "another input in this run maps to the same output path")
            ledger.fail(outcome.file, collision, outcome.started, info, outcome.seconds)
            continue
        ledger.claimed_outputs.add(relative_out)
        ingested[info.video_id] = Ingested(outcome.file, outcome.started, outcome.seconds)
        videos.append((info, outcome.segments))
    return videos
