"""Videos as detection hands them to render, made without the detectors (tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from anonray.decode.segment import decode_segment
from anonray.handoff import VideoDetections
from anonray.ingest.probe import probe
from anonray.track.collect import DetectionCollector


def analysed_without_detections(path: Path, relative_path: str, target_seconds: float = 2.0) -> VideoDetections:
    """A local video as detection hands it to render, every frame analysed and nothing found: for running the
    render stages (tests, benchmarks) without the detectors. Probes and decodes the file (tiny frames)."""
    info, segments = probe(path, relative_path, target_seconds)
    collector = DetectionCollector([(info, segments)])
    pts = [p for s in segments for _, p, _ in decode_segment(path, info, s, (96, 54))]
    video = collector.drain_incomplete()[0]
    video.frame_pts[:] = pts
    for s in video.segments:
        s.error_class, s.error_message, s.ended = "", "", True
    return video
