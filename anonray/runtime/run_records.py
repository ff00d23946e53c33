"""The end of a run: its tables, its manifest and review sheet, and for a URI output their upload."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import ray

from anonray.config import Config
from anonray.layout import REGIONS_TABLE
from anonray.records.rows import local_host, run_figures, software_versions, utc_now
from anonray.records.run_manifest import write_run_records
from anonray.records.tables import write_part, write_run_part
from anonray.runtime.ledger import RunLedger
from anonray.store.remote_output import RemoteState

log = logging.getLogger("anonray")


def write_tables(ledger: RunLedger, config: Config, started: dt.datetime, ray_mode: str, files_matched: int,
                 actor_restarts: Callable[[], int], detection_precision: str, gpus_reserved: float = 0.0) -> dict:
    """The run's parts of the videos, segments and runs tables; returns the runs row. ``actor_restarts`` is
    asked once the run's end is stamped (reading the RestartLog can wait); ``gpus_reserved``: the GPUs the
    detection pool held (rows.run_figures)."""
    resources = ray.cluster_resources()
    alive = {n.get("NodeManagerHostname", "") for n in ray.nodes() if n.get("Alive")}
    summary, state_dir, run_id = ledger.summary, ledger.state_dir, ledger.run_id
    run_row = {
        "run_id": run_id, "started_utc": started, "finished_utc": utc_now(),
        **software_versions(),
        "model_ids": ledger.ctx.model_ids_json, "config_json": config.canonical_json(),
        "config_hash": config.config_hash(), "ray_mode": ray_mode, "hosts": sorted(alive or {local_host()}),
        "cluster_cpus": resources.get("CPU", 0.0), "cluster_gpus": resources.get("GPU", 0.0),
        "files_matched": files_matched, "files_ignored": summary.ignored,
        "videos_ok": summary.ok, "videos_failed": summary.failed, "videos_skipped": summary.skipped,
        "frames_total": summary.frames, "footage_seconds": summary.footage_seconds,
        "wall_seconds": summary.wall_seconds, "exit_code": summary.exit_code,
        "render_retries": ledger.render_retries, "actor_restarts": actor_restarts(),
        "detection_precision": detection_precision,
        **run_figures(summary.footage_seconds, summary.wall_seconds, summary.ok, summary.failed, gpus_reserved),
    }
    write_run_part(state_dir, "videos", run_id, ledger.video_rows)
    write_part(state_dir, "segments", run_id, ledger.segment_rows)
    write_part(state_dir, "runs", run_id, [run_row])
    return run_row


def write_audit(ledger: RunLedger, config: Config, output_dir: Path | str, run_row: dict) -> None:
    """The review sheet and the run manifest (records/audit.py); a failure is logged, the outputs stand."""
    summary, remote = ledger.summary, ledger.remote
    if remote is not None:
        try:  # the review sheet outlines the regions, which render workers uploaded
            remote.pull(REGIONS_TABLE, f"part-{ledger.run_id}-")
        except OSError as err:
            log.error("run %s: the regions could not be read back: %s", ledger.run_id, type(err).__name__)
    try:
        node_hosts = {n.get("NodeID", ""): n.get("NodeManagerHostname", "") for n in ray.nodes()}
        summary.manifest_path, summary.review_path = write_run_records(
            state_dir=ledger.state_dir, output_dir=output_dir, run_row=run_row, video_rows=ledger.video_rows,
            segment_rows=ledger.segment_rows, config=config, model_ids=ledger.ctx.model_ids,
            node_hosts=node_hosts)
    except Exception as err:  # noqa: BLE001 - the tables are written; the missing manifest is reported
        log.error("run %s: the run manifest could not be written: %s", ledger.run_id, type(err).__name__)


def publish_remote(ledger: RunLedger, remote: RemoteState, keep_regions: bool) -> None:
    """A URI output: the run's tables, manifest and review sheet go up to the store (store/remote_output.py)."""
    summary = ledger.summary
    try:
        remote.publish_run(ledger.run_id, keep_regions)
    except OSError as err:  # the rows written early stay on the store
        log.error("run %s: the run's records could not be uploaded: %s", ledger.run_id, type(err).__name__)
        summary.manifest_path = summary.review_path = None
        return
    summary.manifest_path = remote.uri_of(summary.manifest_path) if summary.manifest_path else None
    summary.review_path = remote.uri_of(summary.review_path) if summary.review_path else None
