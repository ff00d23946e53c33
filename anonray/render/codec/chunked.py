"""Parallel encoding of one long video: cut at segment boundaries, each chunk decoded, masked and encoded
on its own with identical settings, the chunks' packets joined losslessly into one file.

Switched on by ``encoder.chunk_seconds``; render.py decides and joins, pipeline.py runs the chunks as Ray
tasks (any node). Nothing here needs Ray. Decisions:

- **Where to cut.** At segment starts: ingest's GOP-aligned segments begin at a keyframe the decoder can
  seek to (decode.py seeks with its fallbacks and runs on past the next keyframe for open GOPs), and at a
  known presentation index, so each chunk takes an exact slice of the mask plan. A video is split once it
  lasts at least ``SPLIT_FACTOR`` x chunk_seconds, into round(duration / chunk_seconds) chunks whose starts
  are the segment starts nearest to even shares of the duration. In a run with fewer videos than render
  slots, shorter videos are cut too, into up to slots / videos chunks of at least ``min_chunk_seconds``
  (``chunk_count``): on 2 cores one libx264 render keeps about 1.5 of them busy, two chunks both.
- **Identical settings.** A chunk's encoder is set up by encode.py's own ``_Transcoder`` (``_add_video_stream``)
  on an in-memory output of the final container's format, so codec, CRF, preset, pixel format, colour tags,
  SAR, field order and interlace mode, and the global-header flag are the single-task render's. The mask
  plan is computed once for the whole video; each chunk masks its frames with its slice of it. Each chunk
  starts with an IDR picture (a fresh encoder) and may use B-frames.
- **Transport.** A chunk's packets are kept in memory (timestamps as arrays, payloads as one byte array)
  and handed back; through Ray's object store (spilled to disk when large) a chunk runs on any node and the
  join on another without a shared folder, and no chunk file is left anywhere. A chunk task holds about its
  encoded size (bitrate x chunk_seconds: ~190 MB for 5 minutes at 5 Mbit/s); the join loads one chunk at a
  time.
- **Timestamps.** Every frame keeps its source pts, so the output's pts are the single-task render's. The
  decode timestamps are the encoders' own where they stay strictly increasing across the joins and never
  after their pts; otherwise the sorted pts delayed by the smallest reorder depth that keeps every dts <= its
  pts (passthrough.decode_timestamps), which is valid across joins since chunks follow each other in time.
- **Parameter sets.** libx264/libx265 put their parameter sets in the extradata (Annex B; x265 adds an SEI
  naming its options, thread counts included) and packets are Annex B; the muxer turns both into avcC/hvcC
  and length-prefixed NAL units. With identical settings every chunk's SPS/PPS (HEVC: VPS/SPS/PPS) are the
  same, also across thread counts (tested). The join opens an encoder with the same settings (never fed),
  whose extradata becomes the output's, and compares the parameter sets. Where any chunk's differ, every
  chunk gets its own in-band before its first picture (an IDR; a decoder keeps the last in-band set), and
  MP4/MOV then use the ``avc3``/``hev1`` sample entry, as passthrough.py does.
- **Audio** is copied or transcoded from the source by the join exactly as by the single-task render
  (encode._Transcoder, which the join extends), interleaved with the video by time.
- **Not chunked** (one task as before): ``encoder.passthrough`` on (it copies GOPs from the source; the two
  would need a per-chunk copy plan), damaged input rendered with ``input.on_damage: mask_whole_frame``
  (frames lost at render time are counted over the whole video), and videos shorter than the threshold.
"""

from __future__ import annotations

import heapq
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from anonray.config import Config, EncoderConfig
from anonray.decode.segment import segment_frames
from anonray.render.codec.passthrough import (
    _PARAM_SET_TYPES,
    _SAMPLE_ENTRY,
    FAMILY_OF_ENCODER,
    PassthroughUnsupported,
    _annexb_starts,
    decode_timestamps,
    nal_type,
)
from anonray.render.codec.transcoder import (
    EncodeError,
    FrameHook,
    TranscodeStats,
    _close_quietly,
    _ffmpeg_message,
    _muxer_options,
    _Transcoder,
    run_job,
)
from anonray.store.av_open import open_input
from anonray.track.collect import VideoDetections
from anonray.types import MaskPlan, Segment, VideoInfo

SPLIT_FACTOR = 1.5
"""A video is split once it lasts at least this many times ``encoder.chunk_seconds``."""
_ANNEXB_START = (b"\x00\x00\x01", b"\x00\x00\x00\x01")


class ChunkError(Exception):
    """A chunk failed; ``error_class`` is its stage's (decode, encode, mask, ...), the message names the chunk."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


@dataclass(frozen=True)
class ChunkJob:
    """What one chunk task needs: the video, its frame range and its slice of the mask plan."""

    info: VideoInfo
    index: int
    count: int
    """Chunks of the video."""
    frames: Segment
    """The chunk's frames: a run of whole segments (start_pts <= pts < end_pts, seek to keyframe_pts)."""
    plan: MaskPlan
    """The regions on these frames, frame_index counted from the chunk's first frame."""
    frame_pts: np.ndarray
    """pts of the chunk's frames as detection analysed them (-1 where it did not)."""
    container_format: str
    """The final output's muxer (its flags decide how the encoder writes its parameter sets)."""

    def failed(self, error_class: str, message: str) -> ChunkError:
        return ChunkError(error_class, f"chunk {self.index + 1} of {self.count}: {message}")


@dataclass(frozen=True)
class ChunkPackets:
    """One encoded chunk's video packets in decode order (their payloads travel apart, as one byte array)."""

    index: int
    pts: np.ndarray
    dts: np.ndarray
    duration: np.ndarray
    keyframe: np.ndarray
    size: np.ndarray
    extradata: bytes
    """The chunk encoder's parameter sets (Annex B)."""
    frames_in: int
    seconds: float

    @property
    def frames(self) -> int:
        return int(self.pts.size)


EncodedChunk = tuple[ChunkPackets, np.ndarray]
"""A chunk's packets and their payloads, concatenated in decode order (uint8)."""


@dataclass
class EncodedChunks:
    """The chunks of one video, encoded: every chunk's packet timestamps at once, their payloads on demand."""

    packets: list[ChunkPackets]
    load: Callable[[int], np.ndarray]
    """Chunk index -> its payloads (asked once per chunk, in order, so only one need be held at a time)."""


ChunkRunner = Callable[[Path, list[ChunkJob], Config], EncodedChunks]
"""Encodes a video's chunks (here, or as Ray tasks) given the render's local source path; raises ChunkError."""


# --- planning -----------------------------------------------------------------------------------------------


def chunk_count(duration_seconds: float, encoder: EncoderConfig, spread: int = 1) -> int:
    """How many chunks a video is encoded in (1 = one task): round(duration / chunk_seconds) for a video of
    at least SPLIT_FACTOR x chunk_seconds; in a small run at least ``spread`` (the render slots per video,
    resources.render_spread) where each chunk still lasts min_chunk_seconds."""
    chunk_seconds = encoder.chunk_seconds
    if chunk_seconds <= 0:
        return 1
    count = max(2, int(duration_seconds / chunk_seconds + 0.5)) \
        if duration_seconds >= SPLIT_FACTOR * chunk_seconds else 1
    if encoder.min_chunk_seconds > 0 and spread > 1:
        count = max(count, min(spread, int(duration_seconds // encoder.min_chunk_seconds)))
    return count


def chunk_ranges(segments: Sequence[Segment], time_base: Fraction, duration_seconds: float,
                 count: int) -> list[Segment]:
    """The frame ranges of ``count`` chunks: runs of consecutive segments (``index`` = chunk number) starting at
    the segment starts nearest to even shares of the duration; [] for no split."""
    if count < 2 or len(segments) < 2:
        return []
    origin = segments[0].start_pts
    starts = np.asarray([float((s.start_pts - origin) * time_base) for s in segments])
    cuts = {int(np.argmin(np.abs(starts - k * duration_seconds / count))) for k in range(1, count)} - {0}
    bounds = [0, *sorted(cuts), len(segments)]
    ranges = [_merged(segments[a:b], k) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
    return ranges if len(ranges) > 1 else []


def _merged(run: Sequence[Segment], index: int) -> Segment:
    first, last = run[0], run[-1]
    return Segment(first.video_id, index, first.start_pts, last.end_pts, first.first_frame_index,
                   sum(s.frame_count for s in run), first.keyframe_pts)


def _contiguous(segments: Sequence[Segment], frame_count: int) -> bool:
    """Whether the segments tile the video: each ends where the next starts, frame indices add up."""
    for a, b in zip(segments, segments[1:], strict=False):
        if a.end_pts != b.start_pts or a.first_frame_index + a.frame_count != b.first_frame_index:
            return False
    return bool(segments) and segments[0].first_frame_index == 0 and \
        segments[-1].first_frame_index + segments[-1].frame_count == frame_count and segments[-1].end_pts is None


def plan_slice(plan: MaskPlan, first: int, count: int) -> MaskPlan:
    """The regions on frames first .. first + count - 1, their frame index counted from ``first``."""
    keep = (plan.frame_index >= first) & (plan.frame_index < first + count)
    return MaskPlan(count, plan.frame_index[keep] - first, plan.xyxy[keep], plan.cls[keep], plan.shape[keep],
                    plan.track_id[keep])


def plan_chunks(video: VideoDetections, plan: MaskPlan, config: Config, container_format: str,
                spread: int = 1) -> list[ChunkJob]:
    """The chunk jobs of one video; [] where it is encoded by one task (see the module's docstring).
    ``spread``: render slots per video in this run (chunk_count)."""
    info = video.info
    count = chunk_count(info.duration_seconds, config.encoder, spread)
    if config.encoder.passthrough or count < 2:
        return []
    segments = sorted((s.segment for s in video.segments), key=lambda s: s.index)
    if not _contiguous(segments, info.frame_count):
        return []
    ranges = chunk_ranges(segments, info.time_base_fraction, info.duration_seconds, count)
    frame_pts = np.asarray(video.frame_pts, np.int64)
    return [ChunkJob(info, k, len(ranges), r, plan_slice(plan, r.first_frame_index, r.frame_count),
                     frame_pts[r.first_frame_index:r.first_frame_index + r.frame_count].copy(), container_format)
            for k, r in enumerate(ranges)]


# --- one chunk ----------------------------------------------------------------------------------------------


class _ChunkEncoder(_Transcoder):
    """encode._Transcoder's video path (stream set-up, working pixel format, field marking, frame hook,
    encoder) fed with one chunk's decoded frames; the encoded packets are kept instead of muxed."""

    def __init__(self, inp: av.container.InputContainer, out: av.container.OutputContainer, job: ChunkJob,
                 cfg: Config, frame_hook: FrameHook | None, frames: Iterator[av.VideoFrame]) -> None:
        super().__init__(inp, out, job.info, cfg.with_overrides(audio="drop"), job.container_format, frame_hook)
        self.frames = frames
        self.columns: list[tuple[int, int, int, bool, int]] = []
        self.payload = bytearray()

    def run(self) -> None:
        for frame in self.frames:
            self._frame(frame)
        self._encode(None)

    def _mux_video(self, packet: av.Packet) -> None:
        if packet.pts is None or packet.dts is None:
            raise EncodeError("encode", "the encoder gave a packet without timestamps")
        self.columns.append((int(packet.pts), int(packet.dts), int(packet.duration or 0), bool(packet.is_keyframe),
                             packet.size))
        self.payload.extend(memoryview(packet))
        self.video_packets += 1

    def packets(self, index: int, seconds: float) -> EncodedChunk:
        pts, dts, duration, key, size = (np.asarray(c) for c in zip(*self.columns, strict=True)) \
            if self.columns else (np.zeros(0, np.int64),) * 5
        described = ChunkPackets(index, pts.astype(np.int64), dts.astype(np.int64), duration.astype(np.int64),
                                 key.astype(bool), size.astype(np.int64), self.dst.codec_context.extradata or b"",
                                 self.frames_in, seconds)
        return described, np.frombuffer(self.payload, np.uint8)


def _decoded(source: Path | str, job: ChunkJob) -> Iterator[av.VideoFrame]:
    """The chunk's frames from the source (decode.py's seeking), FFmpeg errors as EncodeError."""
    try:
        for frame in segment_frames(source, job.info, job.frames):
            if frame.pts is None:
                frame.pts = frame.dts  # the frame's time as decode.py reads it
            yield frame
    except av.error.FFmpegError as err:
        raise EncodeError("decode", _ffmpeg_message(err)) from None


def encode_chunk(source: Path | str, job: ChunkJob, config: Config, frame_hook: FrameHook | None) -> EncodedChunk:
    """Decode, mask (``frame_hook``) and encode the chunk's frames from ``source`` (a path, or a URI read by
    ranges); raise EncodeError on every failure, ``frame_count_mismatch`` when it gave other than its frames."""
    started = time.perf_counter()
    try:
        inp = open_input(source, job.info.container)
    except av.error.FFmpegError as err:
        raise EncodeError("open", _ffmpeg_message(err)) from None
    with inp:
        try:  # never written to: it only gives the encoder the final container's flags
            out = av.open(io.BytesIO(), "w", format=job.container_format,
                          container_options=_muxer_options(job.container_format, inp))
        except av.error.FFmpegError as err:
            raise EncodeError("open_output", _ffmpeg_message(err)) from None
        try:
            encoder = _ChunkEncoder(inp, out, job, config, frame_hook, _decoded(source, job))
            encoder.run()
        except av.error.FFmpegError as err:
            raise EncodeError("transcode", _ffmpeg_message(err)) from None
        finally:
            _close_quietly(out)
    if encoder.frames_out != job.frames.frame_count or encoder.video_packets != encoder.frames_out:
        raise EncodeError("frame_count_mismatch", f"wrote {encoder.video_packets} of the chunk's "
                          f"{job.frames.frame_count} frames")
    return encoder.packets(job.index, time.perf_counter() - started)


# --- the join -----------------------------------------------------------------------------------------------


def joined_decode_timestamps(chunks: Sequence[ChunkPackets]) -> np.ndarray:
    """Decode timestamps for the chunks' packets in order: their encoders' where valid across the joins, else
    the sorted pts delayed by the smallest reorder depth that fits. EncodeError where chunks overlap in time."""
    for a, b in zip(chunks, chunks[1:], strict=False):
        if a.frames and b.frames and int(b.pts.min()) <= int(a.pts.max()):
            raise EncodeError("join", f"chunk {b.index + 1} starts before chunk {a.index + 1} ends")
    pts = np.concatenate([c.pts for c in chunks]) if chunks else np.zeros(0, np.int64)
    dts = np.concatenate([c.dts for c in chunks]) if chunks else np.zeros(0, np.int64)
    try:
        return decode_timestamps(pts, dts.tolist())
    except PassthroughUnsupported as why:
        raise EncodeError("join", why.reason) from None


def parameter_sets(extradata: bytes, family: str) -> tuple[bytes, ...]:
    """The parameter-set NAL units (H.264 SPS, PPS; HEVC VPS, SPS, PPS) of Annex B extradata, in order; other
    units (x265's SEI naming its options) are left out. Extradata that is not Annex B: the whole of it."""
    if not extradata.startswith(_ANNEXB_START):
        return (extradata,)
    starts = _annexb_starts(extradata)
    units = [extradata[a:b - 3].rstrip(b"\x00") for a, b in zip(starts, [*starts[1:], len(extradata) + 3],
                                                                 strict=True)]
    return tuple(u for u in units if u and nal_type(u[0], family) in _PARAM_SET_TYPES[family])


def _packet_seconds(packet: av.Packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None and packet.time_base is not None else float("-inf")


class _JoinTranscoder(_Transcoder):
    """encode._Transcoder's output (video stream set-up, audio copied or transcoded, metadata) with the video
    packets taken from the encoded chunks, in order, instead of from an encoder."""

    def __init__(self, inp: av.container.InputContainer, out: av.container.OutputContainer, info: VideoInfo,
                 cfg: Config, fmt_name: str, chunks: EncodedChunks) -> None:
        super().__init__(inp, out, info, cfg, fmt_name, None)
        self.chunks = chunks
        self.dts = joined_decode_timestamps(chunks.packets)
        self.in_band = self._compare_parameter_sets(FAMILY_OF_ENCODER[cfg.encoder.codec], fmt_name)
        self.frames_in = sum(c.frames_in for c in chunks.packets)

    def _compare_parameter_sets(self, family: str, fmt_name: str) -> bool:
        """Open the output's encoder (never fed: its parameter sets become the output's avcC/hvcC) and compare
        the chunks' with them. Where any differs, every chunk carries its own in-band (a decoder keeps the last
        in-band set, so a chunk after a differing one cannot fall back on the avcC/hvcC), and MP4/MOV use the
        avc3/hev1 sample entry."""
        cc = self.dst.codec_context
        try:
            cc.open()
        except av.error.FFmpegError as err:
            raise EncodeError("encode", _ffmpeg_message(err)) from None
        reference = parameter_sets(cc.extradata or b"", family)
        if all(parameter_sets(c.extradata, family) == reference for c in self.chunks.packets):
            return False
        for chunk in self.chunks.packets:
            if not chunk.extradata.startswith(_ANNEXB_START):
                raise EncodeError("join", f"chunk {chunk.index + 1}: parameter sets differ and are not Annex B")
        if fmt_name in ("mp4", "mov"):
            cc.codec_tag = _SAMPLE_ENTRY[family]
        return True

    def run(self) -> None:
        self._tag_output()
        demuxed = self.inp.demux([r.src for r in self.audio]) if self.audio else iter(())
        audio = ((_packet_seconds(p), p, self.by_index[p.stream.index]) for p in demuxed if p.size)
        for _, packet, route in heapq.merge(self._video_packets(), audio, key=lambda item: item[0]):
            if route is None:
                self._mux(packet)
                self.video_packets += 1
                self.frames_out += 1
            else:
                self._audio_packet(route, packet)
        self._flush_audio()

    def _video_packets(self) -> Iterator[tuple[float, av.Packet, None]]:
        k = 0
        time_base = self.src.time_base
        for i, chunk in enumerate(self.chunks.packets):
            payload = self.chunks.load(i)
            if payload.size != int(chunk.size.sum()):
                raise EncodeError("join", f"chunk {chunk.index + 1}: {payload.size} bytes, "
                                  f"its packets hold {int(chunk.size.sum())}")
            ends = np.cumsum(chunk.size)
            for j in range(chunk.frames):
                data = payload[ends[j] - chunk.size[j]:ends[j]].tobytes()
                packet = av.Packet(chunk.extradata + data if j == 0 and self.in_band else data)
                packet.pts, packet.dts, packet.time_base = int(chunk.pts[j]), int(self.dts[k]), time_base
                packet.duration, packet.is_keyframe = int(chunk.duration[j]), bool(chunk.keyframe[j])
                packet.stream = self.dst
                k += 1
                yield float(packet.dts * time_base), packet, None
            del payload


def join_chunks(source: Path, dst: Path, info: VideoInfo, config: Config, chunks: EncodedChunks) -> TranscodeStats:
    """Write dst from the chunks' video packets and the source's audio (as the single-task render writes it);
    raise EncodeError on every failure (dst may then hold a partial file, which the caller deletes)."""

    def make_job(inp: av.container.InputContainer, out: av.container.OutputContainer,
                 fmt_name: str) -> _JoinTranscoder:
        return _JoinTranscoder(inp, out, info, config, fmt_name, chunks)

    return run_job(source, dst, make_job)


def failure_message(err: BaseException) -> str:
    """A chunk failure's message without its class prefix (EncodeError's str starts with its class)."""
    return getattr(err, "message", None) or str(err) or type(err).__name__


def encoded_here(encode: Callable[[ChunkJob], EncodedChunk], jobs: list[ChunkJob]) -> EncodedChunks:
    """Encode the chunks one after another in this process (no Ray; every chunk's payloads stay in memory
    until the join); per-file failures (exceptions with an ``error_class``: EncodeError, render's RenderError)
    as ChunkError."""
    results = []
    for job in jobs:
        try:
            results.append(encode(job))
        except Exception as err:
            if not hasattr(err, "error_class"):
                raise
            raise job.failed(err.error_class, failure_message(err)) from None
    return EncodedChunks([p for p, _ in results], lambda i: results[i][1])
