"""Parallel encoding of one long video: cut at segment boundaries, each chunk decoded, masked and encoded
on its own with identical settings, the chunks' packets joined losslessly into one file.

Switched on by ``encoder.chunk_seconds``: render/video.py plans the chunks (``plan_chunks``) and joins them
(``join_chunks``); runtime/driver.py runs ``encode_chunk`` as Ray tasks on any node, ``encoded_here`` runs
them in this process. Nothing here needs Ray. Where to cut, how identical settings are kept, how packets
travel, and how timestamps and parameter sets survive the joins is in docs/codec.md ("chunked.py").
"""

from __future__ import annotations

import heapq
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from anonray.config import Config, EncoderConfig
from anonray.decode.segment import segment_frames
from anonray.errors import Failure, FileFailure
from anonray.handoff import VideoDetections
from anonray.render.codec.bitstream import (
    FAMILY_OF_ENCODER,
    SAMPLE_ENTRY,
    UnusableTimestamps,
    decode_timestamps,
    is_annexb,
    parameter_sets,
)
from anonray.render.codec.settings import for_source
from anonray.render.codec.transcoder import (
    EncodeError,
    FrameHook,
    Transcoder,
    TranscodeStats,
    close_quietly,
    ffmpeg_message,
    muxer_options,
    run_job,
)
from anonray.store.av_open import open_input
from anonray.types import MaskPlan, Segment, VideoInfo

SPLIT_FACTOR = 1.5
"""A video is split once it lasts at least this many times ``encoder.chunk_seconds``."""


class ChunkError(FileFailure):
    """A chunk failed; ``error_class`` is its stage's (decode, encode, mask, ...), the message names the chunk."""


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
    sample_at: tuple[int, ...] = ()
    """Frames (counted from the chunk's first) whose source luma to keep for the fidelity measure (qa/fidelity.py)."""

    cap_seconds: float = 0.0
    """The length the bitrate cap is sized for (settings.rate_cap): the video's shortest chunk's, the same for
    every chunk and the join's reference encoder, whose parameter sets (levels follow the VBV limits) must match."""

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
    source_luma: dict[int, np.ndarray] = field(default_factory=dict)
    """The source's luma planes of the job's ``sample_at`` frames, by the video's presentation index."""

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
                spread: int = 1, sample_at: Sequence[int] = ()) -> list[ChunkJob]:
    """The chunk jobs of one video; [] where it is encoded by one task (see docs/codec.md, "Not chunked").
    ``spread``: render slots per video in this run (chunk_count); ``sample_at``: presentation indices whose
    source luma the chunks keep."""
    info = video.info
    count = chunk_count(info.duration_seconds, config.encoder, spread)
    if config.encoder.passthrough or count < 2:
        return []
    segments = sorted((s.segment for s in video.segments), key=lambda s: s.index)
    if not _contiguous(segments, info.frame_count):
        return []
    ranges = chunk_ranges(segments, info.time_base_fraction, info.duration_seconds, count)
    frame_pts = np.asarray(video.frame_pts, np.int64)
    cap_seconds = shortest_chunk_seconds(info, [r.frame_count for r in ranges])
    return [ChunkJob(info, k, len(ranges), r, plan_slice(plan, r.first_frame_index, r.frame_count),
                     frame_pts[r.first_frame_index:r.first_frame_index + r.frame_count].copy(), container_format,
                     tuple(i - r.first_frame_index for i in sample_at
                           if r.first_frame_index <= i < r.first_frame_index + r.frame_count), cap_seconds)
            for k, r in enumerate(ranges)]


def shortest_chunk_seconds(info: VideoInfo, frame_counts: Sequence[int]) -> float:
    """The shortest chunk's length in seconds (by its share of the video's frames). A cap sized for it holds for
    every longer chunk too: s + 0.9 b <= s (s_min + 0.9 b) / s_min for s >= s_min."""
    return info.duration_seconds * min(frame_counts, default=0) / max(info.frame_count, 1)


# --- one chunk ----------------------------------------------------------------------------------------------


class _ChunkEncoder(Transcoder):
    """Transcoder's video path (stream set-up, working pixel format, field marking, frame hook, encoder) fed
    with one chunk's decoded frames; the encoded packets are kept instead of muxed."""

    def __init__(self, inp: av.container.InputContainer, out: av.container.OutputContainer, job: ChunkJob,
                 cfg: Config, frame_hook: FrameHook | None, frames: Iterator[av.VideoFrame]) -> None:
        super().__init__(inp, out, job.info, cfg.with_overrides(audio="drop"), job.container_format, frame_hook,
                         encoded_seconds=job.cap_seconds or None)
        self.frames = frames
        self.columns: list[tuple[int, int, int, bool, int]] = []
        self.payload = bytearray()

    def run(self) -> None:
        """The chunk's frames instead of the demuxed input; no audio, no output metadata."""
        for frame in self.frames:
            self.handle_frame(frame)
        self.encode(None)

    def mux_video(self, packet: av.Packet) -> None:
        """Keep the packet's timestamps and payload (for ``packets``) instead of muxing it."""
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
        raise EncodeError("decode", ffmpeg_message(err)) from None


def encode_chunk(source: Path | str, job: ChunkJob, config: Config, frame_hook: FrameHook | None) -> EncodedChunk:
    """Decode, mask (``frame_hook``) and encode the chunk's frames from ``source`` (a path, or a URI read by
    ranges); raise EncodeError on every failure, ``frame_count_mismatch`` when it gave other than its frames."""
    config = for_source(config, job.info)
    started = time.perf_counter()
    try:
        inp = open_input(source, job.info.container)
    except av.error.FFmpegError as err:
        raise EncodeError("open", ffmpeg_message(err)) from None
    with inp:
        try:  # never written to: it only gives the encoder the final container's flags
            out = av.open(io.BytesIO(), "w", format=job.container_format,
                          container_options=muxer_options(job.container_format, inp))
        except av.error.FFmpegError as err:
            raise EncodeError("open_output", ffmpeg_message(err)) from None
        try:
            encoder = _ChunkEncoder(inp, out, job, config, frame_hook, _decoded(source, job))
            encoder.run()
        except av.error.FFmpegError as err:
            raise EncodeError("transcode", ffmpeg_message(err)) from None
        finally:
            close_quietly(out)
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
    except UnusableTimestamps as why:
        raise EncodeError("join", why.reason) from None


def _packet_seconds(packet: av.Packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None and packet.time_base is not None else float("-inf")


class _JoinTranscoder(Transcoder):
    """Transcoder's output (video stream set-up, audio copied or transcoded, metadata) with the video packets
    taken from the encoded chunks, in order, instead of from an encoder."""

    def __init__(self, inp: av.container.InputContainer, out: av.container.OutputContainer, info: VideoInfo,
                 cfg: Config, fmt_name: str, chunks: EncodedChunks, cap_seconds: float | None) -> None:
        super().__init__(inp, out, info, cfg, fmt_name, None, encoded_seconds=cap_seconds or None)
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
            raise EncodeError("encode", ffmpeg_message(err)) from None
        reference = parameter_sets(cc.extradata or b"", family)
        if all(parameter_sets(c.extradata, family) == reference for c in self.chunks.packets):
            return False
        for chunk in self.chunks.packets:
            if not is_annexb(chunk.extradata):
                raise EncodeError("join", f"chunk {chunk.index + 1}: parameter sets differ and are not Annex B")
        if fmt_name in ("mp4", "mov"):
            cc.codec_tag = SAMPLE_ENTRY[family]
        return True

    def run(self) -> None:
        """The chunks' video packets and the source's audio, interleaved by time; nothing is decoded."""
        self.tag_output()
        demuxed = self.inp.demux([r.src for r in self.audio]) if self.audio else iter(())
        audio = ((_packet_seconds(p), p, self.by_index[p.stream.index]) for p in demuxed if p.size)
        for _, packet, route in heapq.merge(self._chunk_packets(), audio, key=lambda item: item[0]):
            if route is None:
                self.mux(packet)
                self.video_packets += 1
                self.frames_out += 1
            else:
                self.audio_packet(route, packet)
        self.flush_audio()

    def _chunk_packets(self) -> Iterator[tuple[float, av.Packet, None]]:
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


def join_chunks(source: Path, dst: Path, info: VideoInfo, config: Config, chunks: EncodedChunks,
                cap_seconds: float | None = None) -> TranscodeStats:
    """Write dst from the chunks' video packets and the source's audio (as the single-task render writes it);
    raise EncodeError on every failure (dst may then hold a partial file, which the caller deletes).
    ``cap_seconds``: the chunk jobs' ``cap_seconds`` (the reference encoder's settings must be theirs)."""
    config = for_source(config, info)

    def make_job(inp: av.container.InputContainer, out: av.container.OutputContainer,
                 fmt_name: str) -> _JoinTranscoder:
        return _JoinTranscoder(inp, out, info, config, fmt_name, chunks, cap_seconds)

    return run_job(source, dst, make_job)


def chunk_failure(err: BaseException) -> Failure:
    """A chunk's failure as its video reports it: a FileFailure's class (else render_error) and its message
    without the class prefix (EncodeError's str starts with its class)."""
    if isinstance(err, FileFailure):
        return Failure(err.error_class, err.message or str(err) or type(err).__name__)
    return Failure("render_error", str(err) or type(err).__name__)


def encoded_here(encode: Callable[[ChunkJob], EncodedChunk], jobs: list[ChunkJob]) -> EncodedChunks:
    """Encode the chunks one after another in this process (no Ray; every chunk's payloads stay in memory
    until the join); per-file failures (FileFailure: EncodeError, render's RenderError) as ChunkError."""
    results = []
    for job in jobs:
        try:
            results.append(encode(job))
        except FileFailure as err:
            failure = chunk_failure(err)
            raise job.failed(failure.error_class, failure.message) from None
    return EncodedChunks([p for p, _ in results], lambda i: results[i][1])
