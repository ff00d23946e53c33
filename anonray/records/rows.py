"""Rows for the Parquet tables, built from stage results (counts, hashes, timings; no coordinates)."""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from anonray import __version__
from anonray.config import Config
from anonray.handoff import RenderResult, VideoDetections
from anonray.types import CLASS_NAMES, VideoInfo


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id() -> str:
    """A run's id: its UTC start to the second and six random hex digits (ids sort in time order)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class RunContext:
    """What every row of one run shares."""

    run_id: str
    config: Config
    model_ids: dict[str, str]

    @property
    def model_ids_json(self) -> str:
        return json.dumps(self.model_ids, sort_keys=True)


def _info_columns(info: VideoInfo) -> dict[str, Any]:
    return {
        "video_id": info.video_id,
        "path": info.relative_path,
        "sha256_in": info.sha256,
        "size_bytes_in": info.size_bytes,
        "mtime_ns_in": info.mtime_ns,
        "inode_in": info.inode,
        "container_in": info.container,
        "video_codec_in": info.video_codec,
        "pixel_format_in": info.pixel_format,
        "video_bitrate_in": info.video_bitrate,
        "audio_codecs": [a.codec for a in info.audio],
        "width": info.width,
        "height": info.height,
        "sample_aspect_ratio": info.sample_aspect_ratio,
        "fps": info.fps,
        "time_base": info.time_base,
        "duration_seconds": info.duration_seconds,
        "frames_in": info.frame_count,
        "rotation": info.rotation,
        "field_order": info.field_order,
        "timecode": info.timecode,
        "variable_frame_rate": info.variable_frame_rate,
    }


def _common(ctx: RunContext) -> dict[str, Any]:
    return {
        "run_id": ctx.run_id,
        "audio_mode": ctx.config.audio,
        "model_ids": ctx.model_ids_json,
        "config_hash": ctx.config.config_hash(),
        "anonray_version": __version__,
    }


def failed_video_row(ctx: RunContext, *, video_id: str, path: str, error_class: str, message: str,
                     started: dt.datetime, info: VideoInfo | None = None,
                     seconds_ingest: float | None = None) -> dict[str, Any]:
    row = {**_common(ctx), "video_id": video_id, "path": path}
    if info is not None:
        row.update(_info_columns(info))
    row.update(status="failed", error_class=error_class, error_message=message, started_utc=started,
               finished_utc=utc_now(), seconds_ingest=seconds_ingest)
    return row


def _qa_columns(result: RenderResult) -> dict[str, Any]:
    """Mask statistics, anomaly flags and QA time of a rendered video (counts only, no coordinates)."""
    row: dict[str, Any] = {"qa_flags": list(result.qa_flags), "seconds_qa": result.seconds_qa}
    stats = result.mask_statistics
    if stats is not None:
        row["share_frames_masked"] = stats.share_frames_masked
        for name in CLASS_NAMES:
            row[f"regions_per_frame_mean_{name}"] = stats.regions_per_frame_mean[name]
            row[f"regions_per_frame_max_{name}"] = stats.regions_per_frame_max[name]
    return row


def _passthrough_columns(result: RenderResult) -> dict[str, Any]:
    """GOPs and frames copied by encoder.passthrough, or why it re-encoded everything (null with it off)."""
    outcome = result.passthrough
    if outcome is None:
        return {}
    return {"gops_copied": outcome.gops_copied, "frames_copied": outcome.frames_copied,
            "passthrough_fallback": outcome.fallback}


def ok_video_row(ctx: RunContext, video: VideoDetections, result: RenderResult, *, started: dt.datetime,
                 seconds_ingest: float, latency_seconds: float | None = None) -> dict[str, Any]:
    """``latency_seconds``: from the run's start to this output published."""
    info = video.info
    counts = {name: sum(s.detections[name] for s in video.segments) for name in CLASS_NAMES}
    return {
        **_common(ctx),
        **_info_columns(info),
        "output_path": result.output_path,
        "output_run_id": ctx.run_id,
        "status": "ok",
        "sha256_out": result.sha256_out,
        "size_bytes_out": result.size_bytes_out,
        "container_out": result.container_out,
        "video_codec_out": result.video_codec_out,
        "pixel_format_out": result.pixel_format_out or None,
        "video_bitrate_out": result.video_bitrate_out,
        "psnr_outside_masks": result.psnr_outside_masks,
        "latency_seconds": latency_seconds,
        "frames_out": result.frames_out,
        "segments": len(video.segments),
        "detections_face": counts["face"],
        "detections_plate": counts["plate"],
        "tracks_face": result.tracks.get("face", 0),
        "tracks_plate": result.tracks.get("plate", 0),
        "tracks_dropped_by_zone": result.tracks_dropped_by_zone,
        "corrections": list(result.corrections) or None,
        "frames_masked": result.frames_masked,
        "frames_masked_whole": result.frames_masked_whole,
        "frames_lost": result.frames_lost,
        **_qa_columns(result),
        **_passthrough_columns(result),
        "encode_chunks": result.encode_chunks,
        "seconds_ingest": seconds_ingest,
        "seconds_decode": sum(s.decode_seconds for s in video.segments),
        "seconds_detect": sum(s.detect_seconds for s in video.segments),
        "seconds_track": result.seconds_track,
        "seconds_encode": result.seconds_encode,
        "started_utc": started,
        "finished_utc": utc_now(),
    }


def run_figures(footage_seconds: float, wall_seconds: float, ok: int, failed: int,
                gpus_reserved: float) -> dict[str, float | None]:
    """The runs row's planning figures: footage hours anonymized per wall-clock hour, the share of processed files
    that failed (skipped files left out), and the GPU hours the run's detection pool held per 100 hours of footage
    (its GPUs x the wall time; null without a GPU or without footage)."""
    processed = ok + failed
    return {
        "footage_hours_per_wall_hour": footage_seconds / wall_seconds if wall_seconds > 0 else None,
        "failure_rate": failed / processed if processed else None,
        "gpu_hours_per_100h_footage": 100 * gpus_reserved * wall_seconds / footage_seconds
        if gpus_reserved > 0 and footage_seconds > 0 else None,
    }


def segment_rows(ctx: RunContext, video: VideoDetections) -> list[dict[str, Any]]:
    return [
        {
            "run_id": ctx.run_id,
            "video_id": video.info.video_id,
            "segment_index": s.segment.index,
            "start_pts": s.segment.start_pts,
            "end_pts": s.segment.end_pts,
            "first_frame_index": s.segment.first_frame_index,
            "frames_expected": s.segment.frame_count,
            "frames_decoded": s.frames_decoded,
            "decode_seconds": s.decode_seconds,
            "detect_seconds": s.detect_seconds,
            "detections_face": s.detections["face"],
            "detections_plate": s.detections["plate"],
            "decode_node_id": s.decode_node_id,
            "detect_node_id": s.detect_node_id,
            "error_class": s.error_class or None,
            "error_message": s.error_message or None,
        }
        for s in video.segments
    ]


def software_versions() -> dict[str, str]:
    """Versions for the runs table; torch's from its package metadata (importing it costs the driver 2 s)."""
    from importlib.metadata import PackageNotFoundError, version

    import av
    import ray

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return {
        "anonray_version": __version__,
        "python_version": platform.python_version(),
        "ray_version": ray.__version__,
        "torch_version": torch_version,
        "av_version": av.__version__,
        "ffmpeg_version": ".".join(str(x) for x in av.library_versions.get("libavcodec", ())),
    }


def local_host() -> str:
    return socket.gethostname()
