"""Smart passthrough: copy the GOPs that need no mask bit-exact from the source, re-encode only the others.

Switched on by ``encoder.passthrough``; the encode stage (encode_stage.py) calls ``passthrough_transcode`` and
falls back to the full re-encode on ``PassthroughUnsupported``. A GOP is an IDR period; it is copied when none
of its frames is masked, detection analysed all of them and its parameter sets travel with it. Copied packets
lose their SEI and demuxer side data; re-encoded runs start with a fresh encoder's IDR. Every frame keeps its
pts; decode timestamps stay the source's. The reasoning is in docs/codec.md ("passthrough.py").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.bitstream
import av.error
import numpy as np

from anonray.config import Config, EncoderConfig
from anonray.render.codec.bitstream import (
    FAMILY_OF_ENCODER,
    IDR_TYPES,
    PARAM_SET_TYPES,
    SAMPLE_ENTRY,
    SEI_TYPES,
    UnusableTimestamps,
    decode_timestamps,
    length_size,
    nal_unit_types,
)
from anonray.render.codec.settings import encoder_options, for_source
from anonray.render.codec.transcoder import (
    EncodeError,
    FrameHook,
    Transcoder,
    TranscodeStats,
    ffmpeg_message,
    run_job,
    working_pixel_format,
)
from anonray.store.av_open import open_input
from anonray.types import MaskPlan, VideoInfo

_SEI_FILTER = {family: "filter_units=remove_types=" + "|".join(map(str, types))
               for family, types in SEI_TYPES.items()}
"""The bitstream filter that removes every SEI NAL unit from copied packets."""
_TO_ANNEXB = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
"""The bitstream filter that turns length-prefixed packets into Annex B with the parameter sets in-band."""
_PLANAR_8BIT = frozenset({"yuv420p", "yuv422p", "yuv444p"})
_REENCODE_PARAMS = "bframes=0:repeat-headers=1"


class PassthroughUnsupported(Exception):
    """Passthrough cannot run on this input; ``reason`` says why (for videos.passthrough_fallback)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PassthroughOutcome:
    """What the encode stage did with encoder.passthrough on (counts only)."""

    gops_copied: int = 0
    gops_reencoded: int = 0
    frames_copied: int = 0
    fallback: str | None = None
    """Why the whole video was re-encoded instead; None when GOPs were copied."""


# --- the source's packets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceIndex:
    """The source's video packets in decode order (one demux pass, nothing decoded)."""

    pts: np.ndarray
    dts: np.ndarray
    """Decode timestamps to write: the source's, or derived from the pts where it has no usable ones."""
    idr: np.ndarray
    """bool: the packet holds an IDR picture (starts a GOP)."""
    param_sets: np.ndarray
    """bool: the packet carries its parameter sets (SPS and PPS; HEVC also VPS) in-band."""
    length_prefixed: bool
    """The source stores NAL units length-prefixed with the parameter sets in its extradata (MP4, MOV, MKV)."""


def scan_source(path: Path | str, info: VideoInfo, family: str) -> SourceIndex:
    """Demux the source's video packets once; raise PassthroughUnsupported where timestamps are missing."""
    pts, dts, idr, params = [], [], [], []
    with open_input(path) as inp:
        stream = next((s for s in inp.streams.video if s.index == info.video_stream_index), inp.streams.video[0])
        extradata = stream.codec_context.extradata if stream.codec_context else None
        size = length_size(extradata, family)
        for packet in inp.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None:
                raise PassthroughUnsupported("video packets without timestamps")
            types = nal_unit_types(memoryview(packet), family, size)
            pts.append(packet.pts)
            dts.append(packet.dts)
            idr.append(bool(types & IDR_TYPES[family]))
            params.append(PARAM_SET_TYPES[family] <= types)
    pts_array = np.asarray(pts, np.int64)
    try:
        dts_array = decode_timestamps(pts_array, dts)
    except UnusableTimestamps as why:
        raise PassthroughUnsupported(why.reason) from None
    return SourceIndex(pts_array, dts_array, np.asarray(idr, bool), np.asarray(params, bool), size is not None)


# --- the plan -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyPlan:
    """Per source video packet (decode order): copied or re-encoded; counts per GOP (IDR period)."""

    copy: np.ndarray
    gops_copied: int
    gops_reencoded: int

    @property
    def frames_copied(self) -> int:
        return int(self.copy.sum())


def plan_copies(index: SourceIndex, analysed_pts: np.ndarray, masked_pts: np.ndarray) -> CopyPlan:
    """Copy a GOP when it starts with an IDR, holds no masked frame, only frames detection analysed, and
    its parameter sets travel with it (in-band at its start, or in the extradata of a stream without any
    in-band ones)."""
    n = index.pts.size
    gop = np.cumsum(index.idr) - (1 if n and index.idr[0] else 0)
    starts = np.flatnonzero(np.r_[True, np.diff(gop) != 0]) if n else np.zeros(0, np.int64)
    blocked = np.isin(index.pts, masked_pts) | ~np.isin(index.pts, analysed_pts)
    gop_blocked = np.bincount(gop, weights=blocked, minlength=len(starts)) > 0 if n else np.zeros(0, bool)
    extradata_sets = index.length_prefixed and not bool(index.param_sets.any())
    has_sets = index.param_sets[starts] | extradata_sets
    copyable = index.idr[starts] & has_sets & ~gop_blocked
    return CopyPlan(copyable[gop] if n else np.zeros(0, bool), int(copyable.sum()), int((~copyable).sum()))


def static_reason(info: VideoInfo, cfg: Config) -> str | None:
    """Why passthrough cannot run on this input, judged from ingest's description alone (None: it may)."""
    cfg = for_source(cfg, info)
    family = FAMILY_OF_ENCODER[cfg.encoder.codec]
    missing = {_TO_ANNEXB[family], "filter_units"} - av.bitstream.bitstream_filters_available
    if missing:
        return f"this FFmpeg build lacks the bitstream filters {sorted(missing)}"
    if info.video_codec != family:
        return f"source codec {info.video_codec} cannot share a stream with {cfg.encoder.codec} ({family}) GOPs"
    if info.field_order != "progressive":
        return f"interlaced source (field order {info.field_order})"
    working, _ = working_pixel_format(info.pixel_format, info.width, info.height)
    if info.pixel_format not in _PLANAR_8BIT or working != info.pixel_format:
        return f"pixel format {info.pixel_format} is not one the encoder writes unchanged"
    return None


def masked_and_analysed(plan: MaskPlan, frame_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pts of the frames with a mask region, pts of every frame detection analysed)."""
    frame_pts = np.asarray(frame_pts, np.int64)
    indices = np.unique(plan.frame_index)
    indices = indices[(indices >= 0) & (indices < frame_pts.size)]
    masked = frame_pts[indices]
    return masked[masked >= 0], frame_pts[frame_pts >= 0]


# --- the job ------------------------------------------------------------------------------------------------


def reencode_options(enc: EncoderConfig, info: VideoInfo) -> dict[str, str]:
    """The encoder options of re-encoded runs: the configured ones, no B-frames, parameter sets in-band. The
    bitrate cap is sized for the whole video (each run's encoder may start with a full VBV buffer: with many
    short runs a file can exceed it, see README "Output container rule")."""
    opts = encoder_options(enc, info=info)
    key = "x264-params" if enc.codec == "libx264" else "x265-params"
    opts[key] = f"{opts[key]}:{_REENCODE_PARAMS}" if opts.get(key) else _REENCODE_PARAMS
    return opts


@dataclass
class ReencodedRun:
    """Consecutive re-encoded GOPs: a fresh decoder and encoder, and the decode timestamps they replace."""

    decoder: av.video.codeccontext.VideoCodecContext
    encoder: av.video.codeccontext.VideoCodecContext
    dts: deque[int] = field(default_factory=deque)


class PassthroughTranscoder(Transcoder):
    """Transcoder (audio, metadata, demux loop) with the video copied or re-encoded per GOP. The output stream
    is set up with the re-encoded runs' options and a sample entry that allows in-band parameter sets."""

    def __init__(self, inp: av.container.InputContainer, out: av.container.OutputContainer, info: VideoInfo,
                 cfg: Config, fmt_name: str, frame_hook: FrameHook | None, index: SourceIndex,
                 plan: CopyPlan) -> None:
        family = FAMILY_OF_ENCODER[cfg.encoder.codec]
        super().__init__(inp, out, info, cfg, fmt_name, frame_hook, video_options=reencode_options(cfg.encoder, info),
                         sample_entry=SAMPLE_ENTRY[family])
        self.cfg, self.info, self.family, self.index, self.plan = cfg, info, family, index, plan
        chain = ([_TO_ANNEXB[self.family]] if index.length_prefixed else []) + [_SEI_FILTER[self.family]]
        self.bsf = av.bitstream.BitStreamFilterContext(",".join(chain), self.src)
        self.packet_number = 0
        self.frames_copied = 0
        self.last_dts: int | None = None
        self.run_state: ReencodedRun | None = None
        self.sorted_pts = np.sort(index.pts)

    def video_packet(self, packet: av.Packet | None) -> None:
        """A packet of a copied GOP goes out filtered; one of a re-encoded GOP into the current run."""
        if packet is None:  # the end of the input
            self.end_run()
            return
        k = self.packet_number
        self.packet_number += 1
        if self.plan.copy[k]:
            self.end_run()
            self.copy_packet(packet, k)
            return
        if self.run_state is None:
            self.run_state = self.start_run()
        self.run_state.dts.append(int(self.index.dts[k]))
        self.reencode_packet(packet)

    def reencode_packet(self, packet: av.Packet) -> None:
        """A packet of a re-encoded GOP: decoded by the run's decoder, its frames masked and encoded."""
        for frame in decoded_frames(self.run_state.decoder, packet):
            self.handle_frame(frame)

    def handle_frame(self, frame: av.VideoFrame) -> None:
        """The hook's index is the frame's presentation index in the whole source, not among re-encoded frames."""
        self.frames_in += 1
        frame = self.to_working(frame)
        index = int(np.searchsorted(self.sorted_pts, frame.pts))
        self.encode(self.apply_hook(index, frame))

    def copy_packet(self, packet: av.Packet, k: int) -> None:
        """Packet ``k`` (decode order) of a copied GOP: filtered (Annex B, no SEI) and muxed with its timestamps."""
        for filtered in self.bsf.filter(packet):
            out = av.Packet(bytes(filtered))  # bytes only: no demuxer side data travels
            out.pts, out.time_base, out.is_keyframe = filtered.pts, self.src.time_base, filtered.is_keyframe
            out.dts = self._next_dts(int(self.index.dts[k]), int(filtered.pts))
            out.stream = self.dst
            self.mux(out)
            self.video_packets += 1
            self.frames_out += 1
            self.frames_copied += 1

    def _next_dts(self, wanted: int, pts: int) -> int:
        dts = wanted if self.last_dts is None else max(wanted, self.last_dts + 1)
        if dts > pts:
            raise PassthroughUnsupported("decode timestamps cannot stay monotonic across a join")
        self.last_dts = dts
        return dts

    def start_run(self) -> ReencodedRun:
        """A fresh decoder and encoder for the next run of re-encoded GOPs."""
        decoder = av.CodecContext.create(self.src.codec_context.name, "r")
        decoder.extradata = self.src.codec_context.extradata
        decoder.thread_type = "AUTO"
        return ReencodedRun(decoder, self.new_encoder())

    def new_encoder(self) -> av.video.codeccontext.VideoCodecContext:
        """A fresh encoder with the output stream's settings: its first picture is an IDR."""
        cc = self.dst.codec_context
        enc = av.CodecContext.create(self.cfg.encoder.codec, "w")
        enc.width, enc.height, enc.pix_fmt = cc.width, cc.height, cc.pix_fmt
        enc.time_base, enc.framerate = cc.time_base, cc.framerate
        if cc.sample_aspect_ratio:
            enc.sample_aspect_ratio = cc.sample_aspect_ratio
        enc.color_range, enc.color_primaries = cc.color_range, cc.color_primaries
        enc.color_trc, enc.colorspace = cc.color_trc, cc.colorspace
        enc.thread_count = cc.thread_count
        enc.options = reencode_options(self.cfg.encoder, self.info)
        return enc

    def end_run(self) -> None:
        """The current run of re-encoded GOPs drained: its decoder's last frames encoded, its encoder flushed."""
        if self.run_state is None:
            return
        for frame in decoded_frames(self.run_state.decoder, None):
            self.handle_frame(frame)
        self.encode(None)
        self.run_state = None

    def video_encoder(self):
        """The current run's encoder; None outside a run (the base class's final flush: every run has ended)."""
        return None if self.run_state is None else self.run_state.encoder

    def mux_video(self, pkt: av.Packet) -> None:
        """A re-encoded packet, with the decode timestamp of the source packet it replaces."""
        queue = self.run_state.dts if self.run_state is not None else deque()
        if not queue:
            raise PassthroughUnsupported("a re-encoded run gave more frames than the source packets it replaces")
        pkt.dts = self._next_dts(min(queue.popleft(), int(pkt.pts)), int(pkt.pts))
        pkt.stream = self.dst
        self.mux(pkt)
        self.video_packets += 1


def passthrough_transcode(src: Path, dst: Path, info: VideoInfo, cfg: Config, frame_hook: FrameHook | None,
                          plan: MaskPlan, frame_pts: np.ndarray, container_format: str | None = None,
                          ) -> tuple[TranscodeStats, PassthroughOutcome]:
    """Write dst with the GOPs free of masks copied and the others masked and re-encoded.

    Raises PassthroughUnsupported where it cannot run (dst may then hold a partial file the caller
    overwrites or deletes) and EncodeError on every other failure, as transcoder.transcode does.
    """
    cfg = for_source(cfg, info)
    reason = static_reason(info, cfg)
    if reason is not None:
        raise PassthroughUnsupported(reason)
    family = FAMILY_OF_ENCODER[cfg.encoder.codec]
    index = scan_source(src, info, family)
    if not index.idr.any():
        raise PassthroughUnsupported("the source has no IDR picture")
    masked, analysed = masked_and_analysed(plan, frame_pts)
    copies = plan_copies(index, analysed, masked)
    if not copies.gops_copied:
        raise PassthroughUnsupported(f"no GOP can be copied: each of the {copies.gops_reencoded} GOPs (IDR to IDR) "
                                     "holds a mask, a frame detection did not analyse, or no parameter sets")
    jobs: list[PassthroughTranscoder] = []

    def make_job(inp: av.container.InputContainer, out: av.container.OutputContainer,
                 fmt_name: str) -> PassthroughTranscoder:
        jobs.append(PassthroughTranscoder(inp, out, info, cfg, fmt_name, frame_hook, index, copies))
        return jobs[-1]

    stats = run_job(src, dst, make_job, container_format)
    outcome = PassthroughOutcome(copies.gops_copied, copies.gops_reencoded, jobs[0].frames_copied)
    return stats, outcome


def decoded_frames(decoder, packet: av.Packet | None) -> list[av.VideoFrame]:
    """The frames a packet (None: the flush) gives; decoder errors as EncodeError."""
    try:
        return decoder.decode(packet)
    except av.error.FFmpegError as err:
        raise EncodeError("decode", ffmpeg_message(err)) from None
