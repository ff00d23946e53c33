"""A source video as render takes it, without the detectors: probed and its frames' timestamps read.

``anonray apply`` renders a reviewed mask plan from the source again; render needs the video's description,
its segments and the pts of every presentation frame, which detection would otherwise have collected.
Decoding to tiny frames gives the pts exactly as the run's decoders saw them. No Ray here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anonray.decode.segment import decode_segment
from anonray.handoff import VideoDetections
from anonray.ingest.probe import probe
from anonray.track.collect import DetectionCollector

TIMESTAMP_FRAME_SIZE = (96, 54)
"""Frames are decoded this small: only their timestamps are kept."""


def undetected_video(path: Path, relative_path: str, target_seconds: float = 2.0,
                     frame_pts: np.ndarray | None = None) -> VideoDetections:
    """A local video as detection hands it to render, every frame analysed and nothing found. ``frame_pts``:
    the frames' timestamps as an earlier render recorded them (records/frame_times.py), used where they fit
    the probed frame count instead of decoding the whole video for them."""
    info, segments = probe(path, relative_path, target_seconds)
    collector = DetectionCollector([(info, segments)])
    if frame_pts is not None and len(frame_pts) == info.frame_count:
        pts = list(frame_pts)
    else:
        pts = [p for s in segments for _, p, _ in decode_segment(path, info, s, TIMESTAMP_FRAME_SIZE)]
    video = collector.drain_incomplete()[0]
    video.frame_pts[:] = pts
    for s in video.segments:
        s.error_class, s.error_message, s.ended = "", "", True
    return video
