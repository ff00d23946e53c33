"""Synthetic footage for tests and demos: a moving textured scene with a planted face and licence plate.

The background is a scrolling photo of a coffee cup (no people). The face is a crop of the astronaut
photo that ships with scikit-image; the plate is rendered text. The boxes where both were pasted are
returned as ground truth, per frame, in stored-frame pixel coordinates.

Run ``python -m anonray.testing.samples OUT_DIR`` to write the demo set.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np

from anonray.synthetic_scene import Scene, make_scene


@dataclass(frozen=True)
class AudioSpec:
    """A sine tone stream."""

    codec: str
    sample_rate: int
    layout: str = "stereo"
    sample_format: str = "s16"

    @property
    def channels(self) -> int:
        return 1 if self.layout == "mono" else 2


@dataclass(frozen=True)
class SampleSpec:
    """How one sample format is written."""

    extension: str
    codec: str
    pix_fmt: str
    size: tuple[int, int]
    """(width, height) of the stored frames."""
    options: dict[str, str] = field(default_factory=dict)
    audio: AudioSpec | None = None
    fps: int = 25
    time_base: Fraction | None = None
    vfr: bool = False
    rotation: int = 0
    interlaced: bool = False


_X264 = {"preset": "veryfast", "g": "15", "bf": "2", "sc_threshold": "0", "x264-params": "log-level=error"}
_AAC = AudioSpec("aac", 48000, "stereo", "fltp")
_OPUS = AudioSpec("libopus", 48000, "stereo", "s16")

SAMPLE_FORMATS: dict[str, SampleSpec] = {
    "h264_mp4": SampleSpec("mp4", "libx264", "yuv420p", (384, 288), _X264, _AAC),
    "hevc_mkv": SampleSpec(
        "mkv",
        "libx265",
        "yuv420p",
        (384, 288),
        {
            "preset": "ultrafast",
            "x265-params": "keyint=15:min-keyint=15:bframes=3:open-gop=1:log-level=error",
        },
        _AAC,
    ),
    "mpeg2_ts": SampleSpec(
        "ts",
        "mpeg2video",
        "yuv420p",
        (720, 576),
        {"g": "12", "bf": "2", "b": "4M"},
        AudioSpec("mp2", 48000, "stereo", "s16"),
    ),
    "mpeg4_avi": SampleSpec(
        "avi",
        "mpeg4",
        "yuv420p",
        (384, 288),
        {"g": "12", "bf": "2", "qscale": "4"},
        AudioSpec("pcm_s16le", 44100, "mono", "s16"),
    ),
    "mjpeg_mov": SampleSpec(
        "mov",
        "mjpeg",
        "yuvj420p",
        (384, 288),
        {"qscale": "5"},
        AudioSpec("pcm_s16le", 48000, "stereo", "s16"),
    ),
    "vp9_webm": SampleSpec(
        "webm",
        "libvpx-vp9",
        "yuv420p",
        (384, 288),
        {"deadline": "realtime", "cpu-used": "8", "g": "15", "lag-in-frames": "0", "b": "800k"},
        _OPUS,
    ),
    "vfr_mp4": SampleSpec(
        "mp4",
        "libx264",
        "yuv420p",
        (384, 288),
        _X264,
        _AAC,
        time_base=Fraction(1, 90000),
        vfr=True,
    ),
    "rotated_mp4": SampleSpec("mp4", "libx264", "yuv420p", (640, 360), _X264, _AAC, rotation=90),
    "interlaced_ts": SampleSpec(
        "ts",
        "mpeg2video",
        "yuv420p",
        (720, 576),
        {"g": "12", "bf": "2", "b": "4M", "flags": "+ilme+ildct"},
        AudioSpec("mp2", 48000, "stereo", "s16"),
        interlaced=True,
    ),
}

_VFR_PATTERN = (1.0, 0.6, 1.4, 1.0, 0.8, 2.0, 0.5, 1.2)
"""Frame durations (in nominal frame periods) cycled through by VFR samples."""


@dataclass
class SampleTruth:
    """What was planted in a sample clip (boxes are xyxy in stored-frame pixels, end exclusive)."""

    format: str
    frame_count: int
    fps: float
    width: int
    height: int
    times: list[float]
    """Presentation time of each frame in seconds from the first frame."""
    face_boxes: np.ndarray
    plate_boxes: np.ndarray
    audio: AudioSpec | None
    rotation: int
    interlaced: bool
    vfr: bool


# --------------------------------------------------------------------------- timing


def _frame_times(frames: int, fps: int, vfr: bool) -> list[float]:
    if not vfr:
        return [i / fps for i in range(frames)]
    times, t = [], 0.0
    for i in range(frames):
        times.append(t)
        t += _VFR_PATTERN[i % len(_VFR_PATTERN)] / fps
    return times


def _frame_pts(times: list[float], time_base: Fraction) -> list[int]:
    return [round(t / time_base) for t in times]


# --------------------------------------------------------------------------- writing


def _add_video_stream(
    container: av.container.OutputContainer, spec: SampleSpec, size: tuple[int, int], fps: int
) -> av.VideoStream:
    stream = container.add_stream(spec.codec, rate=fps, options=dict(spec.options))
    stream.width, stream.height = size
    stream.pix_fmt = spec.pix_fmt
    stream.codec_context.time_base = spec.time_base or Fraction(1, fps)
    if spec.time_base is not None:
        stream.time_base = spec.time_base
    if spec.rotation:
        stream.set_display_rotation(spec.rotation)
    return stream


def _tff_graph(width: int, height: int, pix_fmt: str, time_base: Fraction) -> av.filter.Graph:
    """A filter graph that marks frames interlaced, top field first (PyAV frames are read-only there)."""
    graph = av.filter.Graph()
    src = graph.add_buffer(width=width, height=height, format=pix_fmt, time_base=time_base)
    setfield = graph.add("setfield", "tff")
    sink = graph.add("buffersink")
    src.link_to(setfield)
    setfield.link_to(sink)
    graph.configure()
    return graph


def _tone(spec: AudioSpec, start: int, count: int) -> np.ndarray:
    """A 440 Hz sine, planar or packed as the sample format needs, shaped for AudioFrame.from_ndarray."""
    t = (np.arange(start, start + count) / spec.sample_rate).astype(np.float64)
    wave = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    chans = spec.channels
    if spec.sample_format == "s16":
        pcm = (wave * 32767).astype(np.int16)
        return np.tile(pcm, chans).reshape(1, chans * count) if chans > 1 else pcm.reshape(1, count)
    return np.tile(wave.astype(np.float32), (chans, 1))


class _AudioWriter:
    """Feeds a sine tone to an audio stream, kept just ahead of the video."""

    def __init__(self, container: av.container.OutputContainer, spec: AudioSpec) -> None:
        self.spec = spec
        self.container = container
        self.stream = container.add_stream(spec.codec, rate=spec.sample_rate, layout=spec.layout)
        self.stream.format = spec.sample_format
        self.written = 0

    def until(self, seconds: float) -> None:
        target = round(seconds * self.spec.sample_rate)
        chunk = self.stream.codec_context.frame_size or 1024
        while self.written < target:
            n = chunk
            frame = av.AudioFrame.from_ndarray(
                _tone(self.spec, self.written, n), format=self.spec.sample_format, layout=self.spec.layout
            )
            frame.sample_rate = self.spec.sample_rate
            frame.pts = self.written
            frame.time_base = Fraction(1, self.spec.sample_rate)
            self.written += n
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def flush(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)


def _encode_frames(
    container: av.container.OutputContainer,
    stream: av.VideoStream,
    scene: Scene,
    pts: list[int],
    time_base: Fraction,
    interlaced: bool,
    audio: _AudioWriter | None,
    times: list[float],
) -> None:
    graph = _tff_graph(scene.width, scene.height, "yuv420p", time_base) if interlaced else None
    for i, p in enumerate(pts):
        frame = av.VideoFrame.from_ndarray(scene.frame(i), format="rgb24")
        if graph is not None:
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = p, time_base
            graph.push(frame)
            frame = graph.pull()
        frame.pts, frame.time_base = p, time_base
        if audio is not None:
            audio.until(times[i] + 0.2)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_sample_video(
    path: str | Path,
    *,
    format: str | SampleSpec = "h264_mp4",
    frames: int = 50,
    fps: int | None = None,
    size: tuple[int, int] | None = None,
    audio: bool = True,
    vfr: bool | None = None,
    rotation: int | None = None,
    interlaced: bool | None = None,
    seed: int = 0,
) -> SampleTruth:
    """Write one synthetic clip; keyword arguments left as None take the format's defaults."""
    name = format if isinstance(format, str) else "custom"
    spec = SAMPLE_FORMATS[format] if isinstance(format, str) else format
    overrides = {"fps": fps, "size": size, "vfr": vfr, "rotation": rotation, "interlaced": interlaced}
    spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    if spec.vfr and spec.time_base is None:
        spec = dataclasses.replace(spec, time_base=Fraction(1, 90000))
    width, height = spec.size
    scene = make_scene(width, height, frames, seed, spec.rotation)
    times = _frame_times(frames, spec.fps, spec.vfr)
    time_base = spec.time_base or Fraction(1, spec.fps)
    with av.open(str(path), "w") as container:
        stream = _add_video_stream(container, spec, spec.size, spec.fps)
        writer = _AudioWriter(container, spec.audio) if audio and spec.audio else None
        _encode_frames(
            container, stream, scene, _frame_pts(times, time_base), time_base, spec.interlaced, writer, times
        )
        if writer is not None:
            writer.until(times[-1] + 1 / spec.fps)
            writer.flush()
    boxes = [scene.boxes(i) for i in range(frames)]
    return SampleTruth(
        format=name,
        frame_count=frames,
        fps=float(spec.fps),
        width=width,
        height=height,
        times=times,
        face_boxes=np.array([b[0] for b in boxes], np.int32),
        plate_boxes=np.array([b[1] for b in boxes], np.int32),
        audio=spec.audio if audio else None,
        rotation=spec.rotation,
        interlaced=spec.interlaced,
        vfr=spec.vfr,
    )


def write_audio_only(path: str | Path, seconds: float = 1.0) -> None:
    """An audio-only file (AAC in MP4) for ingest's negative tests."""
    with av.open(str(path), "w") as container:
        writer = _AudioWriter(container, _AAC)
        writer.until(seconds)
        writer.flush()


def sample_paths(folder: Path) -> Iterator[tuple[str, Path]]:
    """(format name, file name) for every sample format in a folder."""
    for name, spec in SAMPLE_FORMATS.items():
        yield name, folder / f"{name}.{spec.extension}"


def write_demo_set(folder: str | Path) -> list[Path]:
    """A handful of clips for the README demo: one 720p H.264 clip and two other formats in a subfolder."""
    folder = Path(folder)
    (folder / "more").mkdir(parents=True, exist_ok=True)
    jobs = [
        (folder / "street_720p.mp4", "h264_mp4", {"size": (1280, 720), "frames": 100}),
        (folder / "more" / "archive_sd.ts", "mpeg2_ts", {"frames": 75, "seed": 1}),
        (folder / "more" / "phone_portrait.mp4", "rotated_mp4", {"frames": 75, "seed": 2}),
    ]
    written = []
    for path, fmt, kwargs in jobs:
        write_sample_video(path, format=fmt, **kwargs)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic demo clips (a face and a licence plate).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--all-formats", action="store_true", help="also write one clip per sample format")
    args = parser.parse_args(argv)
    written = write_demo_set(args.out_dir)
    if args.all_formats:
        (args.out_dir / "formats").mkdir(parents=True, exist_ok=True)
        for name, path in sample_paths(args.out_dir / "formats"):
            write_sample_video(path, format=name)
            written.append(path)
    print(f"wrote {len(written)} clips")


if __name__ == "__main__":
    main()
