"""Tiny synthetic clips for the mask and encode tests, written with PyAV (no external files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from anonray.types import AudioStreamInfo, VideoInfo


def textured_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth-but-detailed RGB image (gradients plus a checkerboard plus mild noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    checker = (((xx // 8) + (yy // 8)) % 2) * 60
    r = (xx * 255 // max(1, width - 1)) // 2 + checker
    g = (yy * 255 // max(1, height - 1)) // 2 + checker
    b = ((xx + yy) * 3) % 128 + 40
    img = np.stack([r, g, b], axis=-1) + rng.integers(0, 12, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class ClipSpec:
    """What to write: container format, codecs, geometry, timestamps, audio, tags."""

    fmt: str = "mp4"
    vcodec: str = "libx264"
    pix_fmt: str = "yuv420p"
    width: int = 160
    height: int = 96
    rate: int = 25
    frames: int = 20
    time_base: Fraction | None = None
    pts: list[int] | None = None
    acodec: str | None = "aac"
    a_sample_fmt: str = "fltp"
    a_rate: int = 48000
    rotation: int = 0
    sar: Fraction | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    colour: tuple[int, int, int, int] | None = None
    """Colour tags (primaries, transfer, matrix, range; FFmpeg's numbers) for the encoder to write."""
    noise: int = 0
    """Amplitude of fresh random noise on every frame (0: the same texture throughout)."""


def _write_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                 spec: ClipSpec, seconds: float) -> None:
    cc = stream.codec_context
    frame_size = cc.frame_size or 1024
    total = int(seconds * spec.a_rate)
    t = 0
    planar = spec.a_sample_fmt.endswith("p")
    dtype = {"flt": np.float32, "s16": np.int16, "s32": np.int32}[spec.a_sample_fmt.rstrip("p")]
    scale = 0.2 if dtype == np.float32 else 0.2 * np.iinfo(dtype).max
    while t < total:
        n = min(frame_size, total - t)
        wave = np.sin(2 * np.pi * 440 * (t + np.arange(n)) / spec.a_rate) * scale
        wave = np.stack([wave, wave]).astype(dtype)
        data = wave if planar else wave.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format=spec.a_sample_fmt, layout="stereo")
        frame.sample_rate = spec.a_rate
        frame.pts = t
        for pkt in stream.encode(frame):
            out.mux(pkt)
        t += n
    for pkt in stream.encode(None):
        out.mux(pkt)


def write_clip(path: Path, spec: ClipSpec) -> Path:
    """Write a clip; frames are textured and carry their index as a bright moving square."""
    out = av.open(str(path), "w", format=spec.fmt)
    vs = out.add_stream(spec.vcodec, rate=spec.rate, options=dict(spec.options))
    vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, spec.pix_fmt
    tb = spec.time_base or Fraction(1, spec.rate)
    vs.codec_context.time_base = tb
    vs.time_base = tb
    if spec.sar:
        vs.codec_context.sample_aspect_ratio = spec.sar
    if spec.rotation:
        vs.set_display_rotation(spec.rotation)
    if spec.colour:
        cc = vs.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = spec.colour
    out.metadata.update(spec.metadata)
    audio = None
    if spec.acodec:
        audio = out.add_stream(spec.acodec, rate=spec.a_rate)
        audio.codec_context.layout = "stereo"
        audio.codec_context.format = spec.a_sample_fmt
    pts_list = spec.pts or [i * int(1 / (spec.rate * tb)) for i in range(spec.frames)]
    base = textured_rgb(spec.width, spec.height)
    rng = np.random.default_rng(1)
    for i, pts in enumerate(pts_list):
        img = base.copy()
        if spec.noise:
            img = np.clip(img + rng.integers(-spec.noise, spec.noise + 1, img.shape), 0, 255).astype(np.uint8)
        x = (i * 5) % max(1, spec.width - 16)
        img[8:24, x : x + 16] = 250
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=spec.pix_fmt)
        frame.pts = pts
        frame.time_base = tb
        for pkt in vs.encode(frame):
            out.mux(pkt)
    for pkt in vs.encode(None):
        out.mux(pkt)
    if audio is not None:
        _write_audio(out, audio, spec, float((pts_list[-1] + 1) * tb))
    out.close()
    return path


def probe_info(path: Path) -> VideoInfo:
    """A VideoInfo from PyAV alone (tests must not depend on the ingest module)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        pkts = [p for p in c.demux(vs) if p.size]
        c.seek(0)
        first = next(c.decode(vs))
        audio = tuple(
            AudioStreamInfo(a.index, a.codec_context.name, a.codec_context.sample_rate,
                            a.codec_context.layout.nb_channels, None, 0)
            for a in c.streams.audio
        )
        sar = vs.codec_context.sample_aspect_ratio or Fraction(1, 1)
        return VideoInfo(
            video_id="test", source_path=str(path), relative_path=path.name, size_bytes=path.stat().st_size,
            sha256="", container=c.format.name, video_codec=vs.codec_context.name,
            pixel_format=vs.codec_context.pix_fmt or "", width=vs.codec_context.width,
            height=vs.codec_context.height, sample_aspect_ratio=f"{sar.numerator}:{sar.denominator}",
            fps=float(vs.average_rate or 0), time_base=str(vs.time_base), start_pts=vs.start_time or 0,
            duration_seconds=float(c.duration or 0) / 1e6, frame_count=len(pkts),
            rotation=int(first.rotation), field_order="progressive", variable_frame_rate=False,
            audio=audio, video_stream_index=vs.index,
        )


def decoded_pts(path: Path) -> list[Fraction]:
    """Presentation times (seconds, exact) of every decoded video frame."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return [Fraction(f.pts) * vs.time_base for f in c.decode(vs)]


def audio_packets(path: Path) -> list[tuple[bytes, Fraction | None]]:
    """(payload, pts in seconds) of every audio packet of the first audio stream."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        a = c.streams.audio[0]
        return [(bytes(p), None if p.pts is None else Fraction(p.pts) * a.time_base)
                for p in c.demux(a) if p.size]
