"""Checks on decoded video shared by the end-to-end tests: frames, timestamps, audio packets, masks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from anonray.config import Config
from anonray.handoff import VideoDetections
from anonray.testing.detections import analysed_without_detections

MAGENTA = np.array([255, 0, 255])


def solid_config(**overrides) -> Config:
    """The default configuration with solid magenta masks, in waves of four videos."""
    base = {"mask.style": "solid", "mask.color": "ff00ff", "resources.wave_videos": 4}
    base.update(overrides)
    return Config().with_overrides(**base)


def decode_frames(path: Path) -> tuple[list[Fraction], list[np.ndarray], tuple[int, int], int]:
    """(presentation times in seconds, RGB images, stored (width, height), display rotation)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        times, images, rotation = [], [], 0
        for frame in c.decode(stream):
            times.append(frame.pts * frame.time_base)
            images.append(frame.to_ndarray(format="rgb24"))
            rotation = frame.rotation
        return times, images, (stream.width, stream.height), rotation


def audio_packets(path: Path) -> tuple[list[bytes], list[float]]:
    """Payloads and times (seconds) of the first audio stream's packets; empty without audio."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return [], []
        packets = [p for p in c.demux(c.streams.audio[0]) if p.size]
        return [bytes(p) for p in packets], [float(p.pts * p.time_base) for p in packets]


def assert_same_audio(src: Path, dst: Path) -> None:
    """Audio packets bit-identical; their times equal up to the output time base (1 ms in Matroska)."""
    src_bytes, src_times = audio_packets(src)
    dst_bytes, dst_times = audio_packets(dst)
    assert dst_bytes == src_bytes
    assert np.allclose(dst_times, src_times, atol=0.001)


def assert_same_times(src_times: list[Fraction], dst_times: list[Fraction], tolerance: float = 0.001) -> None:
    assert len(dst_times) == len(src_times)
    worst = max((abs(float(a - b)) for a, b in zip(src_times, dst_times, strict=True)), default=0.0)
    assert worst <= tolerance, f"a frame's timestamp moved by {worst * 1000:.2f} ms"


def mask_pixels(image: np.ndarray, color: np.ndarray = MAGENTA, tolerance: int = 40) -> np.ndarray:
    """Boolean map of the pixels within ``tolerance`` (per channel) of the solid mask colour."""
    return np.abs(image.astype(int) - color).max(axis=2) <= tolerance


def analysed_video(path: Path, rel: str, target_seconds: float = 2.0) -> VideoDetections:
    """A video as detection hands it to render: every segment ended, every frame analysed, no detections."""
    return analysed_without_detections(path, rel, target_seconds)
