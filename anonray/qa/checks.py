"""Automated QA of one rendered output, before it is published, and mask statistics for the record.

Pure functions, no Ray. ``inspect_output`` reads the written (temporary) output once: every video frame
decoded, the audio packets demuxed. ``output_problems`` compares what was read with the input (frames,
timestamps, duration, size, aspect, rotation, field order, timecode, audio durations); ``check_output``
raises ``QAError`` (``qa_failed``) with a message a person understands when anything differs.
``mask_statistics`` and ``anomaly_flags`` summarise a MaskPlan (counts and flags, never coordinates) for
the ``videos`` table. What each check compares: docs/design.md, "qa/checks.py".
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from anonray.errors import FileFailure
from anonray.handoff import MaskStatistics
from anonray.ingest.probe import field_order_name
from anonray.ingest.timecode import timecode_of
from anonray.render.codec.settings import encoder_for
from anonray.render.codec.transcoder import interlace_mode, working_name, working_pixel_format
from anonray.render.mask import luma_samples
from anonray.store.av_open import open_input
from anonray.types import CLASS_NAMES, MaskPlan, VideoInfo, ratio_text

TIMESTAMP_TOLERANCE_SECONDS = 0.001
"""How far an output frame's time may be from the input's: the rounding of a 1 ms container time base
(Matroska). Where the output time base is coarser, one of its ticks."""

VANISH_MIN_TRACKS = 3
"""tracks_vanish: masks on the frame before the drop (``many tracks``)."""
VANISH_MIN_SECONDS = 1.0
"""tracks_vanish: the run of frames without any mask after the drop lasts at least this long."""
DROPOUT_MIN_DETECTIONS_PER_FRAME = 1.0
"""detections_dropout: detections per frame every neighbouring segment has at least (``many``)."""

_FIELD_FIRST = {"tt": "top", "tb": "top", "bb": "bottom", "bt": "bottom", "progressive": "progressive",
                "tff": "top", "bff": "bottom"}
"""Field order names (ingest's, and encode.interlace_mode's) -> the field shown first."""

FLAG_TRACKS_VANISH = "tracks_vanish"
FLAG_DETECTIONS_DROPOUT = "detections_dropout"


class QAError(FileFailure):
    """An output that failed its checks (``qa_failed``); nothing is published."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__("qa_failed", message)
        self.problems = list(problems)


@dataclass
class AudioRead:
    """One output audio stream as demuxed: its span in seconds and its longest packet (one frame)."""

    codec: str
    duration_seconds: float | None
    frame_seconds: float


@dataclass
class OutputRead:
    """What one pass over an output file found."""

    frames_decoded: int = 0
    frame_times: list[Fraction] = field(default_factory=list)
    """Presentation times (seconds) of the decoded frames, in presentation order."""
    width: int = 0
    height: int = 0
    sample_aspect_ratio: str = "1:1"
    rotation: int = 0
    field_order: str = "unknown"
    """As ingest names it (ingest.field_order_name), from the first decoded frame."""
    interlaced_frame: bool = False
    """Whether the first decoded frame is coded interlaced (a container's field order tag alone is not)."""
    timecode: str | None = None
    """SMPTE start timecode in canonical form (timecode.py), None where there is none."""
    time_base: Fraction | None = None
    audio: list[AudioRead] = field(default_factory=list)
    decode_error: str = ""
    """Why decoding stopped early ('' when every packet decoded)."""
    seconds: float = 0.0
    pixel_format: str = ""
    """Of the first decoded frame."""
    colour: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Colour tags as the decoder reports them: primaries, transfer, matrix, range (FFmpeg's numbers)."""
    video_packet_bytes: int = 0
    """Bytes of every video packet (the output's video bitrate, with its duration)."""
    luma: dict[int, np.ndarray] = field(default_factory=dict)
    """Luma planes of the frames asked for (``luma_at``), by presentation index (qa/fidelity.py)."""


def inspect_output(path: str | Path, luma_at: Collection[int] = ()) -> OutputRead:
    """Decode every video frame of ``path`` and demux its audio (one pass); never raises on bad data.
    ``luma_at``: presentation indices whose luma plane to keep (OutputRead.luma)."""
    started = time.perf_counter()
    read = OutputRead()
    try:
        with open_input(path) as container:
            _read_container(container, read, frozenset(luma_at))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        read.decode_error = _error_text(err)
    read.frame_times.sort()
    read.seconds = time.perf_counter() - started
    return read


def _error_text(err: BaseException) -> str:
    if isinstance(err, av.error.FFmpegError):
        return f"{type(err).__name__}: {err.strerror or 'error'}"
    return type(err).__name__


def _read_container(container: av.container.InputContainer, read: OutputRead, luma_at: frozenset[int]) -> None:
    if not container.streams.video:
        read.decode_error = "the output has no video stream"
        return
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    # Unless pixels are kept for the fidelity measure, the deblocking filter (H.264/HEVC) is skipped: about 20%
    # less decode time on 1080p H.264. Every frame is still parsed and reconstructed, so decode errors surface.
    if not luma_at:
        video.codec_context.options = {"skip_loop_filter": "all"}
    read.time_base = video.time_base
    read.width, read.height = int(video.codec_context.width or 0), int(video.codec_context.height or 0)
    read.sample_aspect_ratio = ratio_text(video.codec_context.sample_aspect_ratio or video.sample_aspect_ratio)
    audio = list(container.streams.audio)
    spans: dict[int, tuple[int, int]] = {}
    longest: dict[int, int] = dict.fromkeys((s.index for s in audio), 0)
    first = True
    for packet in container.demux([video, *audio]):
        if packet.stream.index == video.index:
            read.video_packet_bytes += packet.size
            for frame in video.decode(packet):  # packet.size == 0 flushes the decoder at the end
                if first:
                    _read_first_frame(container, video, frame, read)
                    first = False
                if read.frames_decoded in luma_at:
                    read.luma[read.frames_decoded] = luma_samples(frame)
                _add_frame(read, frame)
        elif packet.size and packet.pts is not None:
            end = packet.pts + (packet.duration or 0)
            lo, hi = spans.get(packet.stream.index, (packet.pts, end))
            spans[packet.stream.index] = (min(lo, packet.pts), max(hi, end))
            longest[packet.stream.index] = max(longest[packet.stream.index], packet.duration or 0)
    for stream in audio:
        tb = stream.time_base or Fraction(0)
        lo_hi = spans.get(stream.index)
        read.audio.append(AudioRead(
            codec=stream.codec_context.name if stream.codec_context else "unknown",
            duration_seconds=float((lo_hi[1] - lo_hi[0]) * tb) if lo_hi else None,
            frame_seconds=float(longest[stream.index] * tb),
        ))


def _read_first_frame(container: av.container.InputContainer, video: av.VideoStream, frame: av.VideoFrame,
                     read: OutputRead) -> None:
    """Rotation, field order and start timecode, read as ingest reads them from an input."""
    read.rotation = int(frame.rotation or 0)
    read.interlaced_frame = bool(frame.interlaced_frame)
    read.field_order = field_order_name(video.codec_context.field_order, read.interlaced_frame)
    read.timecode = timecode_of(container, video, frame, float(video.average_rate or 0))
    read.pixel_format = frame.format.name
    ctx = video.codec_context
    read.colour = (int(ctx.color_primaries or 0), int(ctx.color_trc or 0), int(ctx.colorspace or 0),
                   int(ctx.color_range or 0))


def _add_frame(read: OutputRead, frame: av.VideoFrame) -> None:
    ts = frame.pts if frame.pts is not None else frame.dts
    read.frames_decoded += 1
    if ts is not None and frame.time_base is not None:
        read.frame_times.append(ts * frame.time_base)


def _duration(times: list[Fraction]) -> float:
    """Span of the presentation times plus the last frame's duration (as ingest measures it)."""
    if len(times) < 2:
        return 0.0
    return float(times[-1] - times[0] + (times[-1] - times[-2]))


def output_problems(read: OutputRead, info: VideoInfo, frame_pts: np.ndarray, audio_mode: str,
                    frames_lost: int = 0, codec: str = "libx264") -> list[str]:
    """Every way the output differs from the input, each as a sentence ([] when it matches).

    codec: the encoder that wrote the output (config ``encoder.codec``; ``auto`` resolved for the input); it
    decides whether the output can be interlaced (encode.interlace_mode) and the bit depth it can hold.

    frame_pts: the input's pts per presentation index (what detection analysed), in the input time base.
    frames_lost: input frames recorded as lost to damaged data (input.on_damage = mask_whole_frame);
    then frame_pts holds the pts of exactly the frames written, and the output must hold exactly those:
    the input's frame count less frames_lost, at those timestamps.
    """
    problems: list[str] = []
    codec = encoder_for(codec, info.video_codec)
    expected = info.frame_count - frames_lost
    if read.decode_error:
        problems.append(f"the output could not be decoded to the end ({read.decode_error}) after "
                        f"{read.frames_decoded} frames")
    if read.frames_decoded != expected:
        lost = f" ({frames_lost} were lost to damaged data, so {expected} were expected)" if frames_lost else ""
        problems.append(f"the output decodes to {read.frames_decoded} frames, the input has {info.frame_count}"
                        + lost)
    problems += _timestamp_problems(read, info, frame_pts, expected)
    if (read.width, read.height) != (info.width, info.height) and not read.decode_error:
        problems.append(f"the output is {read.width}x{read.height} pixels, the input {info.width}x{info.height}")
    if read.sample_aspect_ratio != _normal_ratio(info.sample_aspect_ratio) and not read.decode_error:
        problems.append(f"the output's sample aspect ratio is {read.sample_aspect_ratio}, the input's "
                        f"{info.sample_aspect_ratio}")
    if read.frames_decoded and read.rotation != info.rotation:
        problems.append(f"the output is displayed rotated by {read.rotation} degrees, the input by {info.rotation}")
    if read.frames_decoded:
        problems += _field_order_problems(read, info, codec) + _timecode_problems(read, info)
        problems += picture_format_problems(read, info, codec)
    problems += _audio_problems(read, info, audio_mode)
    return problems


def expected_field_first(info: VideoInfo, codec: str) -> str | None:
    """The field the output shows first ('top' or 'bottom'), 'progressive', or None where it is not checked:
    interlaced input the encoder codes progressive (libx265; see encode.interlace_mode) and input whose
    field order is unknown."""
    mode = interlace_mode(info, codec)
    if mode in ("tff", "bff"):
        return _FIELD_FIRST[mode]
    return "progressive" if info.field_order == "progressive" else None


def _field_order_problems(read: OutputRead, info: VideoInfo, codec: str) -> list[str]:
    expected = expected_field_first(info, codec)
    if expected is None:
        return []
    if _FIELD_FIRST.get(read.field_order) != expected:
        return [f"the output's field order is {read.field_order}, the input's {info.field_order}"]
    if expected != "progressive" and not read.interlaced_frame:
        return [f"the output's frames are coded progressive, the input's are interlaced ({info.field_order})"]
    return []


_UNSPECIFIED = ({0, 2}, {0, 2}, {2}, {0, 1})
"""Per colour tag (primaries, transfer, matrix, range), the values that all mean "not said": reserved or
unspecified, and for the range unspecified or limited (what a decoder assumes without the tag)."""
_TAG_NAMES = ("colour primaries", "transfer characteristics", "matrix coefficients", "range")


def picture_format_problems(read: OutputRead, info: VideoInfo, codec: str) -> list[str]:
    """Bit depth and chroma format (the output's pixel format against the one encoder.codec writes for the
    input's, settings in transcoder.working_pixel_format) and the four colour tags, each against the input's
    (full range where the working format is)."""
    problems = []
    expected_format, full = working_pixel_format(info.pixel_format, info.width, info.height, codec)
    if working_name(read.pixel_format) != expected_format:
        problems.append(f"the output's pixel format is {read.pixel_format}, {expected_format} was expected for the "
                        f"input's {info.pixel_format} ({info.bit_depth}-bit)")
    expected = info.color_primaries, info.color_transfer, info.color_space, 2 if full else info.color_range
    for name, got, want, unset in zip(_TAG_NAMES, read.colour, expected, _UNSPECIFIED, strict=True):
        if got != want and not (got in unset and want in unset):
            problems.append(f"the output's {name} tag is {got}, the input's {want}")
    return problems


def _timecode_problems(read: OutputRead, info: VideoInfo) -> list[str]:
    if info.timecode is None or read.timecode == info.timecode:
        return []
    return [f"the output's start timecode is {read.timecode or 'missing'}, the input's {info.timecode}"]


def _normal_ratio(text: str) -> str:
    try:
        num, den = (int(x) for x in text.split(":"))
        return ratio_text(Fraction(num, den)) if den else "1:1"
    except ValueError:
        return "1:1"


def _timestamp_problems(read: OutputRead, info: VideoInfo, frame_pts: np.ndarray, frames: int) -> list[str]:
    expected = [int(p) * info.time_base_fraction for p in np.sort(np.asarray(frame_pts, np.int64)) if p >= 0]
    if len(expected) != frames or len(read.frame_times) != len(expected):
        return []  # a frame count problem is already reported
    tolerance = max(TIMESTAMP_TOLERANCE_SECONDS, float(read.time_base or 0))
    moved = [i for i, (a, b) in enumerate(zip(expected, read.frame_times, strict=True))
             if abs(float(a - b)) > tolerance]
    problems = []
    if moved:
        i = moved[0]
        problems.append(f"{len(moved)} output frame timestamps differ from the input's (first at frame {i}: "
                        f"{float(read.frame_times[i]):.6f} s instead of {float(expected[i]):.6f} s)")
    duration_in, duration_out = _duration(expected), _duration(read.frame_times)
    if len(expected) > 1 and abs(duration_in - duration_out) > 2 * tolerance:
        problems.append(f"the output lasts {duration_out:.3f} s, the input {duration_in:.3f} s")
    return problems


def _audio_problems(read: OutputRead, info: VideoInfo, audio_mode: str) -> list[str]:
    expected = 0 if audio_mode == "drop" else len(info.audio)
    if len(read.audio) != expected:
        return [f"the output has {len(read.audio)} audio streams, {expected} were expected"]
    problems = []
    for k, (src, out) in enumerate(zip(info.audio if expected else (), read.audio, strict=False)):
        if src.duration_seconds is None or not src.packets:
            continue
        if out.duration_seconds is None:
            problems.append(f"audio stream {k} of the output holds no audio, the input's lasts "
                            f"{src.duration_seconds:.3f} s")
            continue
        tolerance = max(out.frame_seconds, TIMESTAMP_TOLERANCE_SECONDS) + TIMESTAMP_TOLERANCE_SECONDS
        if abs(out.duration_seconds - src.duration_seconds) > tolerance:
            problems.append(f"audio stream {k} of the output lasts {out.duration_seconds:.3f} s, the input's "
                            f"{src.duration_seconds:.3f} s")
    return problems


def check_output(path: str | Path, info: VideoInfo, frame_pts: np.ndarray, audio_mode: str,
                 frames_lost: int = 0, codec: str = "libx264", luma_at: Collection[int] = ()) -> OutputRead:
    """Inspect ``path`` against the input; raise QAError naming every difference (see output_problems).
    ``luma_at``: presentation indices whose luma to keep (inspect_output)."""
    read = inspect_output(path, luma_at)
    problems = output_problems(read, info, frame_pts, audio_mode, frames_lost, codec)
    if problems:
        raise QAError("the output failed its checks, so it was not published: " + "; ".join(problems), problems)
    return read


def regions_per_frame(plan: MaskPlan, cls: int | None = None) -> np.ndarray:
    """Mask regions on each frame (of one class id, or all)."""
    keep = plan.frame_index if cls is None else plan.frame_index[plan.cls == cls]
    keep = keep[(keep >= 0) & (keep < plan.frame_count)]
    return np.bincount(keep, minlength=plan.frame_count)[: plan.frame_count]


def mask_statistics(plan: MaskPlan) -> MaskStatistics:
    frames = max(plan.frame_count, 0)
    per_class = {name: regions_per_frame(plan, cls) for cls, name in enumerate(CLASS_NAMES)}
    share = float((regions_per_frame(plan) > 0).sum() / frames) if frames else 0.0
    return MaskStatistics(
        share_frames_masked=share,
        regions_per_frame_mean={n: float(c.mean()) if frames else 0.0 for n, c in per_class.items()},
        regions_per_frame_max={n: int(c.max()) if frames else 0 for n, c in per_class.items()},
    )


def tracks_vanish(regions: np.ndarray, cuts: np.ndarray, min_frames: int,
                  min_tracks: int = VANISH_MIN_TRACKS) -> bool:
    """Whether masks drop from at least ``min_tracks`` on one frame to none on the next, with no scene cut
    there, and stay away for at least ``min_frames`` frames (the rest of the video counts too)."""
    cut_set = {int(c) for c in cuts}
    drops = np.flatnonzero((regions[:-1] >= min_tracks) & (regions[1:] == 0)) + 1
    for start in drops:
        if int(start) in cut_set:
            continue
        later = np.flatnonzero(regions[start:] > 0)
        run = int(later[0]) if later.size else len(regions) - int(start)
        if run >= min_frames:
            return True
    return False


def detections_dropout(detections: Sequence[int], frames: Sequence[int],
                       min_per_frame: float = DROPOUT_MIN_DETECTIONS_PER_FRAME) -> bool:
    """Whether a segment has zero detections while each of its neighbouring segments had at least
    ``min_per_frame`` detections per frame."""
    density = [d / f if f > 0 else 0.0 for d, f in zip(detections, frames, strict=True)]
    for i, count in enumerate(detections):
        if count or frames[i] <= 0:
            continue
        neighbours = [density[j] for j in (i - 1, i + 1) if 0 <= j < len(density)]
        if neighbours and all(d >= min_per_frame for d in neighbours):
            return True
    return False


def anomaly_flags(plan: MaskPlan, cuts: np.ndarray, fps: float, segment_detections: Sequence[int],
                  segment_frames: Sequence[int]) -> list[str]:
    """The anomaly flags of one video (sorted names; [] when none)."""
    flags = []
    min_frames = max(2, round(VANISH_MIN_SECONDS * fps)) if fps > 0 else 25
    # the detector classes' regions only: zones and regions drawn by a reviewer never vanish
    per_frame = sum((regions_per_frame(plan, c) for c in range(len(CLASS_NAMES))), np.zeros(plan.frame_count, int))
    if tracks_vanish(per_frame, cuts, min_frames):
        flags.append(FLAG_TRACKS_VANISH)
    if detections_dropout(segment_detections, segment_frames):
        flags.append(FLAG_DETECTIONS_DROPOUT)
    return sorted(flags)
