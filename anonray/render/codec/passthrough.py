"""Smart passthrough: copy the GOPs that need no mask bit-exact from the source, re-encode only the others.

Switched on by ``encoder.passthrough``. Faster than a full re-encode (a copied GOP is neither decoded nor
encoded) and it keeps the source's picture quality wherever nothing personal is shown.

Decisions (each measured with PyAV 18 / FFmpeg 8 on H.264 and HEVC in MP4, MOV and Matroska):

- **Which GOPs are copied.** A GOP here is an *IDR period*: the video packets from one IDR picture (H.264
  NAL unit type 5; HEVC IDR_W_RADL 19 or IDR_N_LP 20), in decode order, up to the next one. IDR pictures
  are found in the packet bytes, not from ``packet.is_keyframe`` (which also marks open-GOP recovery
  points and CRA pictures). Nothing decoded after an IDR refers to anything before it, so an IDR period
  decodes the same alone as in the whole stream; open GOPs (recovery-point I frames, CRA) inside a period
  stay with their period. A period is copied when none of its frames has a mask region, every frame of it
  was analysed by detection (a frame detection never saw is never written unmasked) and its parameter sets
  travel with it (in-band at its first packet, or in the source's avcC/hvcC extradata when the stream has
  none in-band). Packets before the first IDR (a stream cut mid-GOP) are always re-encoded.
- **One stream, two sets of parameter sets.** Copied packets go through FFmpeg bitstream filters:
  ``h264_mp4toannexb`` / ``hevc_mp4toannexb`` (for MP4/MOV/Matroska sources; it puts the source's SPS/PPS,
  and VPS, in-band before every IDR) and ``filter_units`` removing every SEI NAL unit. Runs of re-encoded
  periods are encoded by a fresh libx264/libx265 encoder each, whose first picture is an IDR with its own
  parameter sets in-band (``repeat-headers=1``). So every period starts with the parameter sets it needs
  and a decoder switches at each IDR. The output's sample entry is ``avc3`` / ``hev1`` in MP4 and MOV
  (parameter sets may change in-band; ``avc1``/``hvc1`` promise they do not); Matroska needs nothing.
  The container's avcC/hvcC holds the re-encoding encoder's parameter sets (any one set is right there).
- **Timestamps.** Copied packets keep their pts and dts. Re-encoded runs are coded without B-frames
  (``bframes=0``), so their packets come out in presentation order, and the k-th packet of a run takes the
  k-th decode timestamp of the source packets it replaces: never after its pts, and the whole output's dts
  sequence is the source's, monotonic across every join. Where the source has no usable dts (Matroska
  leaves some unset) a decode timestamp sequence is derived from the pts (the smallest reorder delay that
  keeps dts <= pts). Every frame keeps its pts, so the output is frame-exact (qa.check_output checks it).
- **SEI stripping.** All SEI NAL units are removed from copied packets (``filter_units=remove_types=6`` for
  H.264, ``39|40`` for HEVC prefix/suffix SEI): user data (registered: captions; unregistered: GPS, names,
  camera serials), picture timing and the like. None of it changes decoded pixels of progressive 8-bit
  video. Copied packets are rebuilt from their bytes, so demuxer side data does not travel either.
  Re-encoded runs carry the encoder's own version SEI, as the full re-encode does.
- **Where it cannot run** (``PassthroughUnsupported``, the caller falls back to the full re-encode and
  records why in ``videos.passthrough_fallback``): a source codec other than the encoder's (MPEG-2, MPEG-4
  part 2, VP9, ... cannot share one stream with H.264/HEVC), interlaced video (field coding and MBAFF
  joins were not verified), a pixel format other than 8-bit 4:2:0/4:2:2/4:4:4 the encoder writes as is,
  damaged input (``input.on_damage: mask_whole_frame``), packets without timestamps, no IDR picture, or no
  GOP free of masks.
- **Audio** is handled exactly as by the full re-encode (encode._Transcoder, which this job extends).
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
from anonray.render.codec.transcoder import (
    EncodeError,
    FrameHook,
    TranscodeStats,
    _add_video_stream,
    _encoder_options,
    _ffmpeg_message,
    _Transcoder,
    output_format,
    run_job,
    transcode,
    working_pixel_format,
)
from anonray.store.av_open import open_input
from anonray.types import MaskPlan, VideoInfo

FAMILY_OF_ENCODER = {"libx264": "h264", "libx265": "hevc"}
"""Encoder -> the source codec whose GOPs it can share one stream with."""
_IDR_TYPES = {"h264": frozenset({5}), "hevc": frozenset({19, 20})}
_PARAM_SET_TYPES = {"h264": frozenset({7, 8}), "hevc": frozenset({32, 33, 34})}
_SEI_FILTER = {"h264": "filter_units=remove_types=6", "hevc": "filter_units=remove_types=39|40"}
_TO_ANNEXB = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
_SAMPLE_ENTRY = {"h264": "avc3", "hevc": "hev1"}
"""MP4/MOV sample entries that allow parameter sets to change in-band."""
_PLANAR_8BIT = frozenset({"yuv420p", "yuv422p", "yuv444p"})
_REENCODE_PARAMS = "bframes=0:repeat-headers=1"
MAX_REORDER = 16
"""Largest reorder delay (frames) tried when decode timestamps are derived from the pts."""


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


def nal_unit_types(data: bytes | memoryview, family: str, length_size: int | None) -> set[int]:
    """NAL unit types in one packet: Annex B (length_size None) or length-prefixed (avcC/hvcC, 1-4 bytes)."""
    if length_size is None:
        data = bytes(data)
        starts = _annexb_starts(data)
    else:
        starts = _prefixed_starts(data, length_size)
    return {nal_type(data[i], family) for i in starts}


def nal_type(first_byte: int, family: str) -> int:
    """The NAL unit type in a unit's first header byte (H.264: low 5 bits; HEVC: bits 1-6)."""
    return first_byte & 0x1F if family == "h264" else (first_byte >> 1) & 0x3F


def _annexb_starts(data: bytes) -> list[int]:
    starts, i = [], data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    return starts


def _prefixed_starts(data: bytes | memoryview, size: int) -> list[int]:
    starts, i = [], 0
    while i + size < len(data):
        starts.append(i + size)
        i += size + int.from_bytes(data[i:i + size], "big")
    return starts


def length_size(extradata: bytes | None, family: str) -> int | None:
    """NAL length field size of a length-prefixed stream (from its avcC/hvcC); None for Annex B."""
    if not extradata or extradata[0] != 1:
        return None
    byte = extradata[4] if family == "h264" else extradata[21] if len(extradata) > 21 else 3
    return (byte & 3) + 1


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
            idr.append(bool(types & _IDR_TYPES[family]))
            params.append(_PARAM_SET_TYPES[family] <= types)
    pts_array = np.asarray(pts, np.int64)
    return SourceIndex(pts_array, decode_timestamps(pts_array, dts), np.asarray(idr, bool),
                       np.asarray(params, bool), size is not None)


def decode_timestamps(pts: np.ndarray, dts: list[int | None]) -> np.ndarray:
    """The source's dts where every packet has one, strictly increasing and never after its pts; otherwise
    the sorted pts delayed by the smallest reorder depth that keeps every dts <= its pts."""
    if pts.size and all(d is not None for d in dts):
        given = np.asarray(dts, np.int64)
        if bool(np.all(np.diff(given) > 0)) and bool(np.all(given <= pts)):
            return given
    ordered = np.sort(pts)
    if ordered.size and bool(np.any(np.diff(ordered) <= 0)):
        raise PassthroughUnsupported("video packets with the same timestamp")
    step = int(np.diff(ordered).min()) if ordered.size > 1 else 1
    for delay in range(min(MAX_REORDER, pts.size) + 1):
        lead = ordered[0] - step * np.arange(delay, 0, -1, dtype=np.int64)
        derived = np.concatenate([lead, ordered[: pts.size - delay]])
        if bool(np.all(derived <= pts)):
            return derived
    raise PassthroughUnsupported("no decode timestamps fit the packets' presentation order")


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


def reencode_options(enc: EncoderConfig) -> dict[str, str]:
    """The encoder options of re-encoded runs: the configured ones, no B-frames, parameter sets in-band."""
    opts = _encoder_options(enc)
    key = "x264-params" if enc.codec == "libx264" else "x265-params"
    opts[key] = f"{opts[key]}:{_REENCODE_PARAMS}" if opts.get(key) else _REENCODE_PARAMS
    return opts


@dataclass
class _Run:
    """Consecutive re-encoded GOPs: a fresh decoder and encoder, and the decode timestamps they replace."""

    decoder: av.video.codeccontext.VideoCodecContext
    encoder: av.video.codeccontext.VideoCodecContext
    dts: deque[int] = field(default_factory=deque)


class _PassthroughTranscoder(_Transcoder):
    """encode._Transcoder (audio, metadata, demux loop) with the video copied or re-encoded per GOP."""

    def __init__(self, inp: av.container.InputContainer, out: av.container.OutputContainer, info: VideoInfo,
                 cfg: Config, fmt_name: str, frame_hook: FrameHook | None, index: SourceIndex,
                 plan: CopyPlan) -> None:
        self.cfg, self.family, self.index, self.plan = cfg, FAMILY_OF_ENCODER[cfg.encoder.codec], index, plan
        super().__init__(inp, out, info, cfg, fmt_name, frame_hook)
        chain = ([_TO_ANNEXB[self.family]] if index.length_prefixed else []) + [_SEI_FILTER[self.family]]
        self.bsf = av.bitstream.BitStreamFilterContext(",".join(chain), self.src)
        self.packet_number = 0
        self.frames_copied = 0
        self.last_dts: int | None = None
        self.run_state: _Run | None = None
        self.sorted_pts = np.sort(index.pts)

    def _add_video(self, out: av.container.OutputContainer, info: VideoInfo, cfg: Config,
                   fmt_name: str) -> tuple[av.video.stream.VideoStream, str, bool]:
        stream, pix_fmt, full = _add_video_stream(out, self.src, info, cfg, fmt_name, reencode_options(cfg.encoder))
        if fmt_name in ("mp4", "mov"):
            stream.codec_context.codec_tag = _SAMPLE_ENTRY[self.family]
        return stream, pix_fmt, full

    def _video_packet(self, packet: av.Packet | None) -> None:
        if packet is None:  # the end of the input
            self._end_run()
            return
        k = self.packet_number
        self.packet_number += 1
        if self.plan.copy[k]:
            self._end_run()
            self._copy(packet, k)
            return
        if self.run_state is None:
            self.run_state = self._start_run()
        self.run_state.dts.append(int(self.index.dts[k]))
        for frame in _decoded(self.run_state.decoder, packet):
            self._frame(frame)

    def _frame(self, frame: av.VideoFrame) -> None:
        self.frames_in += 1
        frame = self._to_working(frame)
        if self.hook is not None:
            index = int(np.searchsorted(self.sorted_pts, frame.pts))  # the presentation index
            try:
                frame = self.hook(index, frame)
            except Exception as err:
                raise EncodeError("mask", f"frame hook failed: {type(err).__name__}: {err}") from err
        self._encode(frame)

    def _copy(self, packet: av.Packet, k: int) -> None:
        for filtered in self.bsf.filter(packet):
            out = av.Packet(bytes(filtered))  # bytes only: no demuxer side data travels
            out.pts, out.time_base, out.is_keyframe = filtered.pts, self.src.time_base, filtered.is_keyframe
            out.dts = self._next_dts(int(self.index.dts[k]), int(filtered.pts))
            out.stream = self.dst
            self._mux(out)
            self.video_packets += 1
            self.frames_out += 1
            self.frames_copied += 1

    def _next_dts(self, wanted: int, pts: int) -> int:
        dts = wanted if self.last_dts is None else max(wanted, self.last_dts + 1)
        if dts > pts:
            raise PassthroughUnsupported("decode timestamps cannot stay monotonic across a join")
        self.last_dts = dts
        return dts

    def _start_run(self) -> _Run:
        decoder = av.CodecContext.create(self.src.codec_context.name, "r")
        decoder.extradata = self.src.codec_context.extradata
        decoder.thread_type = "AUTO"
        return _Run(decoder, self._new_encoder())

    def _new_encoder(self) -> av.video.codeccontext.VideoCodecContext:
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
        enc.options = reencode_options(self.cfg.encoder)
        return enc

    def _end_run(self) -> None:
        if self.run_state is None:
            return
        for frame in _decoded(self.run_state.decoder, None):
            self._frame(frame)
        self._encode(None)
        self.run_state = None

    def _video_encoder(self):
        """The current run's encoder; None outside a run (the base class's final flush: every run has ended)."""
        return None if self.run_state is None else self.run_state.encoder

    def _mux_video(self, pkt: av.Packet) -> None:
        """A re-encoded packet, with the decode timestamp of the source packet it replaces."""
        queue = self.run_state.dts if self.run_state is not None else deque()
        if not queue:
            raise PassthroughUnsupported("a re-encoded run gave more frames than the source packets it replaces")
        pkt.dts = self._next_dts(min(queue.popleft(), int(pkt.pts)), int(pkt.pts))
        pkt.stream = self.dst
        self._mux(pkt)
        self.video_packets += 1


def passthrough_transcode(src: Path, dst: Path, info: VideoInfo, cfg: Config, frame_hook: FrameHook | None,
                          plan: MaskPlan, frame_pts: np.ndarray, container_format: str | None = None,
                          ) -> tuple[TranscodeStats, PassthroughOutcome]:
    """Write dst with the GOPs free of masks copied and the others masked and re-encoded.

    Raises PassthroughUnsupported where it cannot run (dst may then hold a partial file the caller
    overwrites or deletes) and EncodeError on every other failure, as encode.transcode does.
    """
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
    jobs: list[_PassthroughTranscoder] = []

    def make_job(inp: av.container.InputContainer, out: av.container.OutputContainer,
                 fmt_name: str) -> _PassthroughTranscoder:
        jobs.append(_PassthroughTranscoder(inp, out, info, cfg, fmt_name, frame_hook, index, copies))
        return jobs[-1]

    stats = run_job(src, dst, make_job, container_format)
    outcome = PassthroughOutcome(copies.gops_copied, copies.gops_reencoded, jobs[0].frames_copied)
    return stats, outcome


def encode_video(src: Path, dst: Path, info: VideoInfo, cfg: Config, frame_hook: FrameHook | None,
                 plan: MaskPlan, frame_pts: np.ndarray, skip_damaged: bool = False,
                 ) -> tuple[TranscodeStats, PassthroughOutcome | None]:
    """The encode stage: encode.transcode, or with encoder.passthrough the smart passthrough where it can
    run (else the full transcode, with the reason in the outcome). The outcome is None with passthrough off."""
    if not cfg.encoder.passthrough:
        return transcode(src, dst, info, cfg, frame_hook, skip_damaged=skip_damaged), None
    output_format(dst)  # an unknown output suffix fails as EncodeError before any work
    try:
        if skip_damaged:
            raise PassthroughUnsupported("damaged input (input.on_damage: mask_whole_frame)")
        return passthrough_transcode(src, dst, info, cfg, frame_hook, plan, frame_pts)
    except PassthroughUnsupported as why:
        stats = transcode(src, dst, info, cfg, frame_hook, skip_damaged=skip_damaged)
        return stats, PassthroughOutcome(fallback=why.reason)


def _decoded(decoder, packet: av.Packet | None) -> list[av.VideoFrame]:
    """The frames a packet (None: the flush) gives; decoder errors as EncodeError."""
    try:
        return decoder.decode(packet)
    except av.error.FFmpegError as err:
        raise EncodeError("decode", _ffmpeg_message(err)) from None
