"""Videos as detection hands them to render, made without the detectors (tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from anonray.corrections.source_video import undetected_video
from anonray.handoff import VideoDetections


def analysed_without_detections(path: Path, relative_path: str, target_seconds: float = 2.0) -> VideoDetections:
    """A local video as detection hands it to render, every frame analysed and nothing found: for running the
    render stages (tests, benchmarks) without the detectors (corrections/source_video.py)."""
    return undetected_video(path, relative_path, target_seconds)
