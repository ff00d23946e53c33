"""Ingest: hash a file, probe it with PyAV and cut it into GOP-aligned segments.

The packet index comes from demuxing only. The one exception is the first frame, which is decoded
during the same pass: PyAV 18 exposes the display matrix only on decoded frames
(``VideoFrame.rotation``), the frame's ``interlaced_frame`` flag is the fallback for the field
order, and its ``timecode`` tag (MPEG-2 GOP header, H.264 timing SEI) the last place a start timecode
is looked for (timecode.py). Decoding it also proves early that the stream is decodable.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from anonray.errors import FileFailure
from anonray.fault_hooks import fault_point
from anonray.ingest.hdr import content_light_level, mastering_display
from anonray.ingest.timecode import timecode_of
from anonray.stall_guard import Heartbeat, call_guarded, no_beat, stall_message
from anonray.store.av_open import open_input
from anonray.store.checksums import sha256_file
from anonray.types import AudioStreamInfo, Segment, VideoInfo, ratio_text

_FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}


STALL_CLASS = "ingest_stalled"
"""The error class of a file whose reading made no progress for resources.stall_seconds."""


class IngestError(FileFailure):
    """A file that cannot be ingested."""


@dataclass(frozen=True)
class PacketIndex:
    """The video stream's timestamps from demuxing: every frame's pts and the keyframes' pts, sorted."""

    pts: np.ndarray
    keyframe_pts: np.ndarray


@dataclass
class _Scan:
    """What one demux pass collects."""

    video_pts: list[int]
    keyframe_pts: list[int]
    audio_packets: dict[int, int]
    audio_span: dict[int, tuple[int, int]]
    first_frame: av.VideoFrame | None
    video_bytes: int = 0


def video_id_for(relative_path: str) -> str:
    """The first 12 hex digits of sha256(relative path)."""
    return hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:12]


MAX_SIDE = 16384
"""Widest or tallest frame accepted, in pixels (larger claims are damaged or hostile headers)."""
MAX_PIXELS = 8192 * 8192
"""Largest frame area accepted (an 8K x 8K frame)."""
_SNIFF_BYTES = 4096


def _open(path: Path, relative_path: str) -> av.container.InputContainer:
    try:
        fault_point("read", path)
        size = path.stat().st_size
    except OSError as err:
        raise ingest_os_error(err, relative_path) from None
    if size == 0:
        raise IngestError("empty_file", f"{relative_path}: the file is empty (0 bytes)")
    try:
        return open_input(path)  # damaged tags are not UTF-8
    except av.error.FFmpegError as err:
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.ENOENT):
            raise ingest_os_error(err, relative_path) from None
        try:
            with open(path, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
        except OSError as read_err:
            raise ingest_os_error(read_err, relative_path) from None
        raise _unrecognised(path, head, size, relative_path, err) from None
    except OSError as err:
        raise ingest_os_error(err, relative_path) from None


def ingest_os_error(err: OSError, relative_path: str) -> IngestError:
    """The IngestError for an OS error while reading an input (no permission, vanished, unreadable)."""
    if isinstance(err, PermissionError) or err.errno in (errno.EACCES, errno.EPERM):
        return IngestError("permission_denied", f"{relative_path}: no permission to read the file")
    if isinstance(err, FileNotFoundError) or err.errno == errno.ENOENT:
        return IngestError("input_vanished", f"{relative_path}: the file no longer exists")
    return IngestError("unreadable", f"{relative_path}: cannot read the file ({err.strerror})")


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 (or ASCII) text with no control characters other than white space."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # the sniffed block may end inside a multi-byte character
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(text) and all(c.isprintable() or c in "\t\r\n\f" for c in text)


def mp4_cut_short(path: Path, size: int) -> bool:
    """Whether an MP4/MOV (ISO BMFF) file ends inside one of its top-level boxes, i.e. was truncated."""
    pos = 0
    with open(path, "rb") as fh:
        while pos + 8 <= size:
            fh.seek(pos)
            header = fh.read(16)
            box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if pos == 0 and kind != b"ftyp":
                return False
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                return False  # the last box runs to the end of the file by definition
            if box_size < 8:
                return False
            if pos + box_size > size:
                return True
            pos += box_size
    return False


def _unrecognised(path: Path, head: bytes, size: int, relative_path: str, err: av.error.FFmpegError) -> IngestError:
    """Why FFmpeg could not open the file, as specifically as the bytes tell."""
    if _looks_like_text(head):
        return IngestError("text_file", f"{relative_path}: the file holds text, not video")
    if mp4_cut_short(path, size):
        return IngestError(
            "truncated",
            f"{relative_path}: the MP4/MOV file is cut short ({size} bytes): its index (moov) is missing, "
            "so no frame can be located",
        )
    return IngestError(
        "not_a_video", f"{relative_path}: not a media file FFmpeg can read ({err.strerror})"
    )


def _video_stream(container: av.container.InputContainer, relative_path: str) -> av.VideoStream:
    """The first real video stream (cover art and other attached pictures are skipped)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if stream.codec_context is None:
                raise IngestError(
                    "unsupported_codec",
                    f"{relative_path}: the video codec of this file has no decoder in this FFmpeg build",
                )
            _check_dimensions(stream.codec_context.width, stream.codec_context.height, relative_path)
            return stream
    what = "audio but no video" if container.streams.audio else "no video"
    raise IngestError("no_video_stream", f"{relative_path}: the file has {what} stream")


def _check_dimensions(width: int | None, height: int | None, relative_path: str) -> None:
    width, height = int(width or 0), int(height or 0)
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise IngestError(
            "absurd_dimensions",
            f"{relative_path}: the video claims a frame size of {width}x{height} pixels, beyond the "
            f"supported {MAX_SIDE} pixels per side and {MAX_PIXELS // 1_000_000} megapixels",
        )


def _packet_ts(packet: av.Packet) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def _scan(container: av.container.InputContainer, video: av.VideoStream, beat: Heartbeat) -> _Scan:
    """Demux every packet of the video and audio streams; decode just the first video frame."""
    audio_ids = [s.index for s in container.streams.audio]
    scan = _Scan([], [], dict.fromkeys(audio_ids, 0), {}, None)
    streams = [video, *container.streams.audio]
    for packet in container.demux(streams):
        beat()
        if packet.size == 0:
            continue
        if packet.stream.index == video.index:
            _scan_video_packet(scan, packet)
        elif packet.stream.index in scan.audio_packets:
            _scan_audio_packet(scan, packet)
    return scan


def _scan_video_packet(scan: _Scan, packet: av.Packet) -> None:
    ts = _packet_ts(packet)
    if ts is None:
        return
    scan.video_pts.append(ts)
    scan.video_bytes += packet.size
    if packet.is_keyframe:
        scan.keyframe_pts.append(ts)
    if scan.first_frame is None:
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return
        if frames:
            scan.first_frame = frames[0]


def _scan_audio_packet(scan: _Scan, packet: av.Packet) -> None:
    idx = packet.stream.index
    scan.audio_packets[idx] += 1
    ts = _packet_ts(packet)
    if ts is None:
        return
    end = ts + (packet.duration or 0)
    lo, hi = scan.audio_span.get(idx, (ts, end))
    scan.audio_span[idx] = (min(lo, ts), max(hi, end))


def _flush_first_frame(video: av.VideoStream) -> av.VideoFrame | None:
    """Drain the decoder (streams with decoder delay give no frame before the end of a short file)."""
    try:
        frames = video.codec_context.decode(None)
    except av.error.FFmpegError:
        return None
    return frames[0] if frames else None


def build_index(pts: list[int], keyframe_pts: list[int], first_decodable: int | None = None) -> PacketIndex:
    """Sort timestamps into presentation order.

    first_decodable is the pts of the first frame a decoder produces from the file start. Frames
    presented before it (a stream cut mid-GOP: non-key frames before the first keyframe and that
    keyframe's open-GOP leading frames) reference pictures that are not in the file; decoders drop
    them, so they are left out of the index rather than reported as missing later.
    """
    sorted_pts = np.sort(np.asarray(pts, np.int64))
    keys = np.unique(np.asarray(keyframe_pts, np.int64))
    if first_decodable is not None and sorted_pts.size and first_decodable in sorted_pts:
        sorted_pts = sorted_pts[sorted_pts >= first_decodable]
        keys = keys[keys >= first_decodable]
    return PacketIndex(pts=sorted_pts, keyframe_pts=keys)


def plan_segments(
    video_id: str, index: PacketIndex, time_base: Fraction, target_seconds: float
) -> list[Segment]:
    """GOP-aligned segments in presentation order, short GOPs merged up to target_seconds.

    Each segment holds the frames with start_pts <= pts < end_pts. The first segment starts at the
    smallest pts even when the stream opens with non-key frames.
    """
    pts = index.pts
    if pts.size == 0:
        return []
    keys = index.keyframe_pts
    first_key = int(keys[0]) if keys.size else int(pts[0])
    starts, seek_to = [int(pts[0])], [first_key]
    target_ticks = Fraction(target_seconds) / time_base
    for key in keys:
        key = int(key)
        if key > starts[-1] and key - starts[-1] >= target_ticks:
            starts.append(key)
            seek_to.append(key)
    ends: list[int | None] = [*starts[1:], None]
    segments = []
    for i, (start, end, key) in enumerate(zip(starts, ends, seek_to, strict=True)):
        first = int(np.searchsorted(pts, start, "left"))
        last = int(np.searchsorted(pts, end, "left")) if end is not None else int(pts.size)
        segments.append(Segment(video_id, i, start, end, first, last - first, key))
    return segments


def _fps(video: av.VideoStream, pts: np.ndarray, time_base: Fraction) -> float:
    rate = video.average_rate or video.guessed_rate
    if rate:
        return float(rate)
    if pts.size > 1 and pts[-1] > pts[0]:
        return float((pts.size - 1) / ((int(pts[-1]) - int(pts[0])) * time_base))
    return 0.0


def _duration_seconds(pts: np.ndarray, time_base: Fraction, fps: float) -> float:
    """Span of the presentation timestamps plus one frame."""
    if pts.size == 0:
        return 0.0
    last = float(np.diff(pts[-2:])[0] * time_base) if pts.size > 1 else (1.0 / fps if fps else 0.0)
    return float((int(pts[-1]) - int(pts[0])) * time_base) + last


def field_order_name(raw: int | str | None, interlaced_frame: bool) -> str:
    """A stream's field order by name: the container/codec value (FFmpeg's AVFieldOrder); where that is
    unknown, the first frame's interlaced flag ('unknown' for interlaced, else 'progressive')."""
    name = _FIELD_ORDERS.get(raw, "unknown") if isinstance(raw, int) else str(raw or "unknown").lower()
    if name in _FIELD_ORDERS.values() and name != "unknown":
        return name
    return "unknown" if interlaced_frame else "progressive"


def _field_order(video: av.VideoStream, first_frame: av.VideoFrame) -> str:
    return field_order_name(video.codec_context.field_order, bool(first_frame.interlaced_frame))


def _audio_info(container: av.container.InputContainer, scan: _Scan) -> tuple[AudioStreamInfo, ...]:
    infos = []
    for stream in container.streams.audio:
        tb = stream.time_base
        duration = None
        if stream.duration and tb:
            duration = float(stream.duration * tb)
        elif stream.index in scan.audio_span and tb:
            lo, hi = scan.audio_span[stream.index]
            duration = float((hi - lo) * tb)
        ctx = stream.codec_context  # None where no decoder exists for the codec (or the header is damaged)
        infos.append(
            AudioStreamInfo(
                index=stream.index,
                codec=ctx.name if ctx else "unknown",
                sample_rate=int(ctx.sample_rate or 0) if ctx else 0,
                channels=int(ctx.channels or 0) if ctx else 0,
                duration_seconds=duration,
                packets=scan.audio_packets.get(stream.index, 0),
            )
        )
    return tuple(infos)


def _checked_scan(container: av.container.InputContainer, video: av.VideoStream, path: Path,
                  relative_path: str, beat: Heartbeat) -> _Scan:
    try:
        scan = _scan(container, video, beat)
    except av.error.FFmpegError as err:
        raise IngestError(
            "unreadable", f"{relative_path}: reading the file failed ({err.strerror})"
        ) from None
    if scan.first_frame is None and scan.video_pts:
        scan.first_frame = _flush_first_frame(video)
    size = path.stat().st_size
    if mp4_cut_short(path, size):
        declared = f"its index lists {video.frames} frames, " if video.frames else ""
        if scan.first_frame is None:
            raise IngestError(
                "header_only",
                f"{relative_path}: the file is cut short ({size} bytes): it holds a header but no "
                f"complete video frame ({declared}none is present)",
            )
        raise IngestError(
            "truncated",
            f"{relative_path}: the file is cut short ({size} bytes): {declared}only "
            f"{len(scan.video_pts)} are present",
        )
    if not scan.video_pts:
        raise IngestError("no_video_frames", f"{relative_path}: the video stream holds no frames")
    if scan.first_frame is None:
        raise IngestError("undecodable", f"{relative_path}: no video frame could be decoded")
    _check_dimensions(scan.first_frame.width, scan.first_frame.height, relative_path)
    return scan


def probe(
    path: str | Path, relative_path: str, target_seconds: float = 2.0, stall_seconds: float = 0.0
) -> tuple[VideoInfo, list[Segment]]:
    """Describe a video file and plan its segments (demux pass plus one decoded frame).

    stall_seconds > 0: the reading runs under that stall limit (anonray/stall_guard.py: a beat per packet
    demuxed and per chunk hashed) and a read that hangs raises IngestError ingest_stalled."""
    if stall_seconds <= 0:
        return _probe_reporting(Path(path), relative_path, target_seconds, no_beat)
    stalled = IngestError(STALL_CLASS, stall_message(f"{relative_path}: reading the file", stall_seconds))
    return call_guarded(lambda beat: _probe_reporting(Path(path), relative_path, target_seconds, beat),
                        stall_seconds, lambda: stalled)


def _probe_reporting(path: Path, relative_path: str, target_seconds: float,
                     beat: Heartbeat) -> tuple[VideoInfo, list[Segment]]:
    """_probe, with FFmpeg's and the OS's errors as IngestErrors."""
    try:
        return _probe(path, relative_path, target_seconds, beat)
    except av.error.FFmpegError as err:
        raise IngestError("unreadable", f"{relative_path}: reading the file failed ({err.strerror})") from None
    except OSError as err:  # the file vanished or lost its permissions while being read
        raise ingest_os_error(err, relative_path) from None


def colour_of(ctx: av.video.codeccontext.VideoCodecContext, first: av.VideoFrame) -> dict:
    """VideoInfo's bit depth, colour tags and HDR metadata fields, from the decoder and the first frame."""
    fmt = first.format
    return dict(
        bit_depth=int(max(c.bits for c in fmt.components)),
        color_primaries=int(ctx.color_primaries or 0),
        color_transfer=int(ctx.color_trc or 0),
        color_space=int(ctx.colorspace or 0),
        color_range=int(ctx.color_range or 0),
        mastering_display=mastering_display(first),
        content_light_level=content_light_level(first),
    )


def _probe(path: Path, relative_path: str, target_seconds: float,
           beat: Heartbeat) -> tuple[VideoInfo, list[Segment]]:
    video_id = video_id_for(relative_path)
    with _open(path, relative_path) as container:
        video = _video_stream(container, relative_path)
        scan = _checked_scan(container, video, path, relative_path, beat)
        first = scan.first_frame
        index = build_index(
            scan.video_pts, scan.keyframe_pts, first.pts if first.pts is not None else first.dts
        )
        time_base = video.time_base
        fps = _fps(video, index.pts, time_base)
        ctx = video.codec_context
        stat = path.stat()
        info = VideoInfo(
            video_id=video_id,
            source_path=str(path.resolve()),
            relative_path=relative_path,
            size_bytes=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            inode=stat.st_ino,
            sha256=sha256_file(path, progress=beat),
            container=container.format.name,
            video_codec=ctx.name,
            pixel_format=ctx.pix_fmt or "unknown",
            width=int(ctx.width or scan.first_frame.width),
            height=int(ctx.height or scan.first_frame.height),
            sample_aspect_ratio=ratio_text(video.sample_aspect_ratio),
            fps=fps,
            time_base=f"{time_base.numerator}/{time_base.denominator}",
            start_pts=int(index.pts[0]),
            duration_seconds=_duration_seconds(index.pts, time_base, fps),
            frame_count=int(index.pts.size),
            rotation=int(scan.first_frame.rotation or 0),
            field_order=_field_order(video, scan.first_frame),
            variable_frame_rate=bool(np.unique(np.diff(index.pts)).size > 1),
            audio=_audio_info(container, scan),
            video_stream_index=video.index,
            timecode=timecode_of(container, video, scan.first_frame, fps),
            **colour_of(ctx, scan.first_frame),
            video_packet_bytes=scan.video_bytes,
        )
    return info, plan_segments(video_id, index, time_base, target_seconds)
