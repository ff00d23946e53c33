"""Parquet schemas and writers for the run's technical metadata: the one source of truth.

Each table is a folder of Parquet parts, ``DIR/_anonray/<table>/part-<run_id>.parquet``, one part per
run, always with the same Arrow schema, so ``pyarrow.dataset`` or ``pandas.read_parquet`` read every
run at once. No coordinates, no crops, no absolute paths, except in the restricted ``regions`` table
(the mask regions per frame, kept apart in RESTRICTED_TABLES).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

VIDEO_STATUSES = ("ok", "failed", "skipped")

VIDEOS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("output_path", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error_class", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("sha256_in", pa.string()),
    pa.field("sha256_out", pa.string()),
    pa.field("size_bytes_in", pa.int64()),
    pa.field("size_bytes_out", pa.int64()),
    pa.field("mtime_ns_in", pa.int64()),
    pa.field("inode_in", pa.int64()),
    pa.field("container_in", pa.string()),
    pa.field("container_out", pa.string()),
    pa.field("video_codec_in", pa.string()),
    pa.field("video_codec_out", pa.string()),
    pa.field("pixel_format_in", pa.string()),
    pa.field("pixel_format_out", pa.string()),
    pa.field("video_bitrate_in", pa.float64()),
    pa.field("video_bitrate_out", pa.float64()),
    pa.field("psnr_outside_masks", pa.float64()),
    pa.field("audio_codecs", pa.list_(pa.string())),
    pa.field("audio_mode", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("sample_aspect_ratio", pa.string()),
    pa.field("fps", pa.float64()),
    pa.field("time_base", pa.string()),
    pa.field("duration_seconds", pa.float64()),
    pa.field("frames_in", pa.int64()),
    pa.field("frames_out", pa.int64()),
    pa.field("rotation", pa.int32()),
    pa.field("field_order", pa.string()),
    pa.field("timecode", pa.string()),
    pa.field("variable_frame_rate", pa.bool_()),
    pa.field("segments", pa.int32()),
    pa.field("detections_face", pa.int64()),
    pa.field("detections_plate", pa.int64()),
    pa.field("tracks_face", pa.int64()),
    pa.field("tracks_plate", pa.int64()),
    pa.field("tracks_dropped_by_zone", pa.int64()),
    pa.field("frames_masked", pa.int64()),
    pa.field("frames_masked_whole", pa.int64()),
    pa.field("frames_lost", pa.int64()),
    pa.field("gops_copied", pa.int64()),
    pa.field("frames_copied", pa.int64()),
    pa.field("passthrough_fallback", pa.string()),
    pa.field("encode_chunks", pa.int32()),
    pa.field("share_frames_masked", pa.float64()),
    pa.field("regions_per_frame_mean_face", pa.float64()),
    pa.field("regions_per_frame_mean_plate", pa.float64()),
    pa.field("regions_per_frame_max_face", pa.int64()),
    pa.field("regions_per_frame_max_plate", pa.int64()),
    pa.field("qa_flags", pa.list_(pa.string())),
    pa.field("seconds_ingest", pa.float64()),
    pa.field("seconds_decode", pa.float64()),
    pa.field("seconds_detect", pa.float64()),
    pa.field("seconds_track", pa.float64()),
    pa.field("seconds_encode", pa.float64()),
    pa.field("seconds_qa", pa.float64()),
    pa.field("latency_seconds", pa.float64()),
    pa.field("model_ids", pa.string()),
    pa.field("config_hash", pa.string()),
    pa.field("anonray_version", pa.string()),
    pa.field("started_utc", pa.timestamp("us", tz="UTC")),
    pa.field("finished_utc", pa.timestamp("us", tz="UTC")),
    pa.field("retries", pa.int32()),
    pa.field("output_run_id", pa.string()),
    pa.field("corrections", pa.list_(pa.string())),
    pa.field("review_status", pa.string()),
])

SEGMENTS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("segment_index", pa.int32(), nullable=False),
    pa.field("start_pts", pa.int64()),
    pa.field("end_pts", pa.int64()),
    pa.field("first_frame_index", pa.int64()),
    pa.field("frames_expected", pa.int64()),
    pa.field("frames_decoded", pa.int64()),
    pa.field("decode_seconds", pa.float64()),
    pa.field("detect_seconds", pa.float64()),
    pa.field("encode_seconds", pa.float64()),
    pa.field("detections_face", pa.int64()),
    pa.field("detections_plate", pa.int64()),
    pa.field("decode_node_id", pa.string()),
    pa.field("detect_node_id", pa.string()),
    pa.field("error_class", pa.string()),
    pa.field("error_message", pa.string()),
])

RUNS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("started_utc", pa.timestamp("us", tz="UTC")),
    pa.field("finished_utc", pa.timestamp("us", tz="UTC")),
    pa.field("anonray_version", pa.string()),
    pa.field("python_version", pa.string()),
    pa.field("ray_version", pa.string()),
    pa.field("torch_version", pa.string()),
    pa.field("av_version", pa.string()),
    pa.field("ffmpeg_version", pa.string()),
    pa.field("model_ids", pa.string()),
    pa.field("config_json", pa.string()),
    pa.field("config_hash", pa.string()),
    pa.field("ray_mode", pa.string()),
    pa.field("hosts", pa.list_(pa.string())),
    pa.field("cluster_cpus", pa.float64()),
    pa.field("cluster_gpus", pa.float64()),
    pa.field("files_matched", pa.int64()),
    pa.field("files_ignored", pa.int64()),
    pa.field("videos_ok", pa.int64()),
    pa.field("videos_failed", pa.int64()),
    pa.field("videos_skipped", pa.int64()),
    pa.field("frames_total", pa.int64()),
    pa.field("footage_seconds", pa.float64()),
    pa.field("wall_seconds", pa.float64()),
    pa.field("exit_code", pa.int32()),
    pa.field("render_retries", pa.int64()),
    pa.field("actor_restarts", pa.int64()),
    pa.field("detection_precision", pa.string()),
    pa.field("footage_hours_per_wall_hour", pa.float64()),
    pa.field("failure_rate", pa.float64()),
    pa.field("gpu_hours_per_100h_footage", pa.float64()),
])

TABLES: dict[str, pa.Schema] = {"videos": VIDEOS_SCHEMA, "segments": SEGMENTS_SCHEMA, "runs": RUNS_SCHEMA}

REGIONS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("frame_index", pa.int64(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("shape", pa.string(), nullable=False),
    pa.field("track_id", pa.int64(), nullable=False),
    pa.field("x0", pa.float32(), nullable=False),
    pa.field("y0", pa.float32(), nullable=False),
    pa.field("x1", pa.float32(), nullable=False),
    pa.field("y1", pa.float32(), nullable=False),
])

SOURCES_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("root", pa.string(), nullable=False),
])

CORRECTIONS_SCHEMA = pa.schema([
    pa.field("correction_id", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("corrects_run_id", pa.string()),
    pa.field("reviewer", pa.string(), nullable=False),
    pa.field("time_utc", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("sha256_in", pa.string()),
    pa.field("fields_json", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("comment", pa.string()),
])

FRAME_PTS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("pts", pa.list_(pa.int64()), nullable=False),
])

RESTRICTED_TABLES: dict[str, pa.Schema] = {"regions": REGIONS_SCHEMA, "sources": SOURCES_SCHEMA,
                                           "corrections": CORRECTIONS_SCHEMA, "frame_pts": FRAME_PTS_SCHEMA}
"""Tables that hold personal data, kept apart from TABLES in folders of their own (0700): ``regions``
(coordinates; one part per video and run, ``part-<run_id>-<video_id>.parquet``, see regions.py), ``sources``
(where each run read its inputs: absolute paths, which may name people or places; see sources.py) and
``corrections`` (what reviewers did, with their names and comments; see corrections/table.py); ``frame_pts``
(each rendered video's frame timestamps, kept with its regions; frame_times.py)."""


def schema_for(name: str) -> pa.Schema:
    return TABLES[name] if name in TABLES else RESTRICTED_TABLES[name]


def table_dir(state_dir: Path, name: str) -> Path:
    return state_dir / name


def to_table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Build a table with exactly the schema of ``name``; missing columns are null, extras are errors."""
    schema = schema_for(name)
    unknown = {k for row in rows for k in row} - set(schema.names)
    if unknown:
        raise KeyError(f"columns not in the {name} schema: {sorted(unknown)}")
    columns = {f.name: [row.get(f.name) for row in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def write_part(state_dir: Path, name: str, run_id: str, rows: list[dict[str, Any]] | pa.Table) -> Path:
    """Write (or replace) this run's part of table ``name`` atomically: temp file, fsync, rename.

    ``rows`` may be a ready ``pa.Table``, which must then have exactly the table's schema.
    """
    if isinstance(rows, pa.Table):
        if not rows.schema.equals(schema_for(name)):
            raise ValueError(f"table does not have the {name} schema")
        table = rows
    else:
        table = to_table(name, rows)
    folder = table_dir(state_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"part-{run_id}.parquet"
    tmp = folder / f".tmp-{uuid.uuid4().hex}.parquet"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def write_run_part(state_dir: Path, name: str, run_id: str, rows: list[dict[str, Any]]) -> Path:
    """The run's one part of table ``name``, replacing the one-row parts it wrote early as files finished
    (``part-<run_id>-<n>.parquet``: what tells a rerun after a killed run which files are done)."""
    path = write_part(state_dir, name, run_id, rows)
    for early in table_dir(state_dir, name).glob(f"part-{run_id}-*.parquet"):
        early.unlink(missing_ok=True)
    return path


def read_table(state_dir: Path, name: str) -> pa.Table:
    """Every run's rows of table ``name`` (empty table with the schema when none exist yet)."""
    folder = table_dir(state_dir, name)
    parts = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
    if not parts:
        return schema_for(name).empty_table()
    return pa.concat_tables([pq.read_table(p, schema=schema_for(name)) for p in parts])
