"""One-pass transcode: demux, decode, hand each frame to a hook (the masker), encode, mux.

``transcode`` writes one output file; ``run_job`` opens input and output and runs a ``Transcoder``, the class
passthrough.py and chunked.py extend through its documented hooks. The output keeps the input's geometry,
frame count, per-frame timestamps, colour tags, field order and start timecode; audio is copied or
re-encoded to AAC; other streams and personal metadata are dropped. The reasoning behind each of these
choices is in docs/codec.md ("transcoder.py").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.filter

import anonray
from anonray.config import Config
from anonray.errors import FileFailure
from anonray.render.codec.settings import encoder_options, for_source
from anonray.render.outputs import audio_fits, canonical_audio_codec, container_format_for
from anonray.store.av_open import open_input
from anonray.types import VideoInfo

FrameHook = Callable[[int, av.VideoFrame], av.VideoFrame]

_RANGE_MPEG = 1
_RANGE_JPEG = 2
_TOP_FIRST = {"tt": "tff", "tb": "tff", "bb": "bff", "bt": "bff"}
"""Field order name (ingest) -> the field that comes first in time (FFmpeg's reading of tb and bt)."""


class EncodeError(FileFailure):
    """Transcoding failed; str() is "<error_class>: <message>" (the message names no path)."""

    def __str__(self) -> str:
        return f"{self.error_class}: {self.message}"


@dataclass(frozen=True)
class TranscodeStats:
    frames_in: int
    frames_out: int
    video_packets: int
    audio_packets_copied: int
    seconds: float
    audio_frames_reencoded: int = 0
    video_packets_skipped: int = 0
    """Video packets the decoder rejected as invalid data and that were skipped (skip_damaged only)."""


MAX_BIT_DEPTH = {"libx264": 10, "libx265": 12}
"""The deepest samples each encoder writes (PyAV's libx264 takes 8 and 10 bits, its libx265 8, 10 and 12)."""


def working_pixel_format(pix_fmt: str | None, width: int, height: int,
                         codec: str = "libx264") -> tuple[str, bool]:
    """The planar pixel format frames are encoded (and masked) in, and whether it is full range.

    4:2:0 -> yuv420p, 4:2:2 -> yuv422p, 4:4:4 -> yuv444p, at the source's bit depth (9-10 bits -> 10, 11-12 ->
    12, capped at what ``codec`` writes: MAX_BIT_DEPTH); yuvj* map to the non-j format flagged full range;
    odd width or height -> yuv444p; RGB, grey and other formats -> yuv420p at their depth.
    """
    name = pix_fmt or "yuv420p"
    full = name.startswith("yuvj")
    try:
        fmt = av.VideoFormat(name, max(width, 2), max(height, 2))
    except (ValueError, av.error.FFmpegError):
        return ("yuv444p" if width % 2 or height % 2 else "yuv420p"), full
    depth = max(c.bits for c in fmt.components)
    suffix = "" if depth <= 8 else f"{min(10 if depth <= 10 else 12, MAX_BIT_DEPTH.get(codec, 8))}le"
    if width % 2 or height % 2:
        return "yuv444p" + suffix, full
    if fmt.is_rgb or len(fmt.components) < 3 or fmt.has_palette:
        return "yuv420p" + suffix, full
    cw, ch = fmt.components[1].width, fmt.components[1].height
    if cw == width and ch == height:
        return "yuv444p" + suffix, full
    if cw * 2 >= width and ch == height:
        return "yuv422p" + suffix, full
    return "yuv420p" + suffix, full


def working_name(decoded_format: str) -> str:
    """The working format a decoded output frame is in: decoders name a full-range 8-bit format yuvj*, the
    encoder was given its yuv* name flagged full range (working_pixel_format)."""
    return decoded_format.replace("yuvj", "yuv")


def ffmpeg_message(err: BaseException) -> str:
    """An FFmpeg error's text without the file name PyAV appends."""
    if isinstance(err, av.error.FFmpegError):
        return f"{type(err).__name__}: {err.strerror or 'error'}"
    return type(err).__name__


def muxer_options(fmt_name: str, inp: av.container.InputContainer) -> dict[str, str]:
    """bitexact (no libavformat encoder tag); for MP4/MOV a movie time scale fine enough that edit
    lists (a non-zero start, audio/video offsets) keep their timestamps exact instead of rounding
    them to the default 1 ms."""
    opts = {"fflags": "+bitexact"}
    if fmt_name in ("mp4", "mov"):
        tb = inp.streams.video[0].time_base
        exact = tb is not None and tb.numerator == 1 and 1000 <= tb.denominator <= 1_000_000
        opts["movie_timescale"] = str(tb.denominator if exact else 90000)
    return opts


def interlace_mode(info: VideoInfo, codec: str) -> str | None:
    """How the encoder codes the frames: 'tff' or 'bff' (interlaced, that field first), 'auto' (interlaced,
    each frame's own flag decides, for field order 'unknown'; the stream-level order FFmpeg then reports
    is x264's initial top field first), or None (progressive: always for libx265, and where x264 cannot
    code the frame height interlaced, which must be a multiple of 4 in 4:2:0, else of 2)."""
    if codec != "libx264" or info.field_order == "progressive":
        return None
    pix_fmt, _ = working_pixel_format(info.pixel_format, info.width, info.height, codec)
    if info.height % (4 if pix_fmt.startswith("yuv420p") else 2):
        return None
    return _TOP_FIRST.get(info.field_order, "auto")


def add_video_stream(out: av.container.OutputContainer, src: av.video.stream.VideoStream, info: VideoInfo,
                     cfg: Config, fmt_name: str, options: dict[str, str] | None = None,
                     sample_entry: str | None = None,
                     seconds: float | None = None) -> tuple[av.video.stream.VideoStream, str, bool]:
    """Add and configure the output video stream after the input stream. Returns (stream, pix_fmt, full).

    options: the encoder's options (default: settings.encoder_options for the config, the interlace mode and
    the source, its bitrate cap sized for an encode of ``seconds``, default the whole video).
    sample_entry: the MP4/MOV sample entry (codec tag) to write instead of the encoder's usual one.
    """
    icc = src.codec_context
    width, height = icc.width or info.width, icc.height or info.height
    pix_fmt, full = working_pixel_format(icc.pix_fmt or info.pixel_format, width, height, cfg.encoder.codec)
    rate = src.average_rate or src.guessed_rate or Fraction(info.fps or 25).limit_denominator(1001)
    interlace = interlace_mode(info, cfg.encoder.codec)
    if options is None:
        options = encoder_options(cfg.encoder, interlace, info, seconds)
    vs = out.add_stream(cfg.encoder.codec, rate=rate, options=options)
    cc = vs.codec_context
    cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
    cc.time_base = src.time_base
    vs.time_base = src.time_base
    cc.framerate = rate
    cc.thread_count = cfg.encoder.threads
    sar = icc.sample_aspect_ratio or src.sample_aspect_ratio
    if sar and sar > 0:
        cc.sample_aspect_ratio = sar
        vs.sample_aspect_ratio = sar
    cc.color_range = _RANGE_JPEG if full else (icc.color_range or 0)
    cc.color_primaries = icc.color_primaries
    cc.color_trc = icc.color_trc
    cc.colorspace = icc.colorspace
    cc.field_order = icc.field_order
    if interlace is not None:
        cc.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
    if cfg.encoder.codec == "libx265" and fmt_name in ("mp4", "mov"):
        cc.codec_tag = "hvc1"  # the tag Apple players require for HEVC in MP4/MOV
    if info.rotation:
        vs.set_display_rotation(info.rotation)
    if sample_entry is not None and fmt_name in ("mp4", "mov"):
        cc.codec_tag = sample_entry
    return vs, pix_fmt, full


class _FieldMarker:
    """Marks every frame interlaced with one field order (FFmpeg's setfield filter; PyAV frames' field
    flags are read-only), so that x264 codes the whole stream with the same field first."""

    def __init__(self, field: str, width: int, height: int, pix_fmt: str, time_base: Fraction) -> None:
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(width=width, height=height, format=pix_fmt, time_base=time_base)
        setfield = self.graph.add("setfield", field)
        sink = self.graph.add("buffersink")
        src.link_to(setfield)
        setfield.link_to(sink)
        self.graph.configure()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        pts, time_base = frame.pts, frame.time_base
        self.graph.push(frame)
        marked = self.graph.pull()
        marked.pts, marked.time_base = pts, time_base
        return marked


def _field_marker(mode: str | None, cc: av.video.codeccontext.VideoCodecContext,
                  time_base: Fraction) -> _FieldMarker | None:
    """The marker for interlace mode 'tff' or 'bff' (None for progressive, or 'auto': frames keep their flags)."""
    if mode not in ("tff", "bff"):
        return None
    return _FieldMarker(mode, cc.width, cc.height, cc.pix_fmt, time_base)


def _keep_language(src: av.stream.Stream, dst: av.stream.Stream) -> None:
    dst.metadata.clear()
    lang = src.metadata.get("language")
    if lang and lang != "und":
        dst.metadata["language"] = lang


@dataclass
class AudioRoute:
    """One input audio stream and its output stream: packets copied, or decoded and re-encoded."""

    src: av.audio.stream.AudioStream
    dst: av.stream.Stream
    copy: bool


def _add_audio_streams(out: av.container.OutputContainer, inp: av.container.InputContainer,
                       cfg: Config, fmt_name: str) -> list[AudioRoute]:
    """Add one output stream per input audio stream: a packet copy where the muxer takes the codec."""
    routes: list[AudioRoute] = []
    if cfg.audio == "drop":
        return routes
    for ia in inp.streams.audio:
        codec = canonical_audio_codec(ia.codec_context.name if ia.codec_context else "")
        if audio_fits(codec, fmt_name):
            oa = out.add_stream_from_template(ia)
            routes.append(AudioRoute(ia, oa, True))
        else:
            if ia.codec_context is None:
                continue  # no decoder for it: nothing sensible to carry over
            oa = out.add_stream("aac", rate=ia.codec_context.sample_rate or 48000)
            oa.codec_context.layout = ia.codec_context.layout
            ia.thread_type = "AUTO"
            routes.append(AudioRoute(ia, oa, False))
        _keep_language(ia, oa)
    return routes


class Transcoder:
    """The state and steps of one transcode: demux, decode, frame hook, encode, mux, with the audio alongside.

    Subclasses change the video path by overriding the hooks (``run``, ``video_packet``, ``handle_frame``,
    ``video_encoder``, ``mux_video``) and build on the helpers (``tag_output``, ``to_working``, ``apply_hook``,
    ``encode``, ``mux``, ``audio_packet``, ``flush_audio``). The constructor calls no hook: a subclass passes
    what it changes about the output video stream as ``video_options`` (the encoder's options, default
    ``encoder_options``), ``sample_entry`` (the MP4/MOV codec tag) and ``encoded_seconds`` (how much of the
    video it encodes, for the bitrate cap; default the whole).
    """

    def __init__(self, inp: av.container.InputContainer, out: av.container.OutputContainer,
                 info: VideoInfo, cfg: Config, fmt_name: str, frame_hook: FrameHook | None,
                 skip_damaged: bool = False, video_options: dict[str, str] | None = None,
                 sample_entry: str | None = None, encoded_seconds: float | None = None) -> None:
        self.inp, self.out, self.hook = inp, out, frame_hook
        self.skip_damaged = skip_damaged
        self.packets_skipped = 0
        streams = inp.streams.video
        index = next((i for i, s in enumerate(streams) if s.index == info.video_stream_index), 0)
        self.src = streams[index]
        self.src.thread_type = "AUTO"
        self.dst, self.pix_fmt, self.full = add_video_stream(out, self.src, info, cfg, fmt_name, video_options,
                                                             sample_entry, encoded_seconds)
        self.timecode = info.timecode
        self.mark_fields = _field_marker(interlace_mode(info, cfg.encoder.codec), self.dst.codec_context,
                                         self.src.time_base)
        self.audio = _add_audio_streams(out, inp, cfg, fmt_name)
        self.by_index = {r.src.index: r for r in self.audio}
        self.frames_in = self.frames_out = self.video_packets = 0
        self.audio_copied = self.audio_reencoded = 0
        self.last_pts: int | None = None
        self.step = self._default_step()

    # --- hooks: called by this class, overridden by subclasses ------------------------------------------------

    def run(self) -> None:
        """Called once by run_job to write the whole output; an override may take the video from elsewhere."""
        self.tag_output()
        for packet in self.inp.demux([self.src] + [r.src for r in self.audio]):
            route = self.by_index.get(packet.stream.index)
            if route is None:
                if packet.size:
                    self.video_packet(packet)
            elif packet.size:
                self.audio_packet(route, packet)
        self._flush()

    def video_packet(self, packet: av.Packet | None) -> None:
        """Called with each demuxed video packet, then None at the end of the input; decodes it and passes the
        frames to handle_frame. An override may copy a packet instead, or decode it with its own decoder."""
        try:
            frames = self.src.decode(packet)
        except av.error.InvalidDataError as err:
            if not self.skip_damaged or packet is None:
                raise EncodeError("decode", ffmpeg_message(err)) from None
            self.packets_skipped += 1  # damaged data: the frames after it still come out (as in decode.py)
            return
        except av.error.FFmpegError as err:
            raise EncodeError("decode", ffmpeg_message(err)) from None
        for frame in frames:
            self.handle_frame(frame)

    def handle_frame(self, frame: av.VideoFrame) -> None:
        """Called with each decoded frame in output order; converts it, applies the hook (index: frames seen so
        far) and encodes it. An override may choose another index for the hook."""
        index = self.frames_in
        self.frames_in += 1
        frame = self.to_working(frame)
        self.encode(self.apply_hook(index, frame))

    def video_encoder(self):
        """Called by every encode: what encodes the video frames, here the output stream. An override may
        return another encoder, or None when there is nothing to encode (the frame or flush is then dropped)."""
        return self.dst

    def mux_video(self, packet: av.Packet) -> None:
        """Called with each encoded video packet; muxes it. An override may set its timestamps first, or keep
        the packet instead of muxing it."""
        self.mux(packet)
        self.video_packets += 1

    # --- helpers for the hooks and for subclasses --------------------------------------------------------------

    def tag_output(self) -> None:
        """The output's metadata: only the anonray comment, the video language and the start timecode."""
        self.out.metadata.clear()
        self.out.metadata["comment"] = f"anonray {anonray.__version__}"
        _keep_language(self.src, self.dst)
        if self.timecode:
            self.dst.metadata["timecode"] = self.timecode

    def to_working(self, frame: av.VideoFrame) -> av.VideoFrame:
        """The frame in the working pixel format, in the input stream's time base, with a pts."""
        pts = frame.pts if frame.pts is not None else self._synth_pts()
        self.last_pts = pts
        if frame.format.name != self.pix_fmt:
            rng = "JPEG" if self.full or frame.color_range == _RANGE_JPEG else "MPEG"
            frame = frame.reformat(format=self.pix_fmt, src_color_range=rng, dst_color_range=rng)
            if self.full:
                frame.color_range = _RANGE_JPEG
        frame.pts = pts
        frame.time_base = self.src.time_base
        return frame

    def apply_hook(self, index: int, frame: av.VideoFrame) -> av.VideoFrame:
        """The frame as the frame hook returns it for presentation index ``index``; a failing hook as EncodeError."""
        if self.hook is None:
            return frame
        try:
            return self.hook(index, frame)
        except Exception as err:
            raise EncodeError("mask", f"frame hook failed: {type(err).__name__}: {err}") from err

    def encode(self, frame: av.VideoFrame | None) -> None:
        """Encode a frame (None: flush the encoder) with video_encoder() and pass the packets to mux_video."""
        encoder = self.video_encoder()
        if encoder is None:
            return
        if frame is not None:
            if self.mark_fields is not None:
                frame = self.mark_fields(frame)
            frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose frame types
            frame.time_base = self.src.time_base
        try:
            packets = encoder.encode(frame)
        except av.error.FFmpegError as err:
            raise EncodeError("encode", ffmpeg_message(err)) from None
        if frame is not None:
            self.frames_out += 1
        for pkt in packets:
            self.mux_video(pkt)

    def mux(self, packet: av.Packet) -> None:
        """Write one packet of any stream to the output; muxer errors as EncodeError."""
        try:
            self.out.mux(packet)
        except av.error.FFmpegError as err:
            raise EncodeError("mux", ffmpeg_message(err)) from None

    def audio_packet(self, route: AudioRoute, packet: av.Packet) -> None:
        """Copy an audio packet to its output stream, or decode and re-encode it (damaged packets skipped)."""
        if route.copy:
            packet.stream = route.dst
            self.mux(packet)
            self.audio_copied += 1
            return
        try:
            frames = route.src.decode(packet)
        except av.error.FFmpegError:
            return  # a damaged audio packet is skipped; the video is what matters
        for frame in frames:
            self._audio_encode(route, frame)

    def flush_audio(self) -> None:
        """Drain the audio decoders and encoders of re-encoded audio streams."""
        for route in self.audio:
            if not route.copy:
                for frame in route.src.decode(None):
                    self._audio_encode(route, frame)
                self._audio_encode(route, None)

    def stats(self, seconds: float) -> TranscodeStats:
        """The job's counts, once it has run."""
        return TranscodeStats(self.frames_in, self.frames_out, self.video_packets, self.audio_copied,
                              seconds, self.audio_reencoded, self.packets_skipped)

    def _default_step(self) -> int:
        """Ticks per frame in the input time base, for frames that come without a pts."""
        rate = self.src.average_rate or self.src.guessed_rate or Fraction(25)
        return max(1, round(1 / (rate * self.src.time_base)))

    def _synth_pts(self) -> int:
        return 0 if self.last_pts is None else self.last_pts + self.step

    def _audio_encode(self, route: AudioRoute, frame: av.AudioFrame | None) -> None:
        try:
            packets = route.dst.encode(frame)
        except av.error.FFmpegError as err:
            raise EncodeError("audio", ffmpeg_message(err)) from None
        if frame is not None:
            self.audio_reencoded += 1
        for pkt in packets:
            self.mux(pkt)

    def _flush(self) -> None:
        self.video_packet(None)
        self.encode(None)
        self.flush_audio()


def close_quietly(out: av.container.OutputContainer) -> None:
    """Close an output after a failure; a second error while closing must not hide the first."""
    with contextlib.suppress(Exception):
        out.close()


def transcode(src: Path, dst: Path, info: VideoInfo, cfg: Config, frame_hook: FrameHook | None = None,
              container_format: str | None = None, skip_damaged: bool = False) -> TranscodeStats:
    """Transcode src to dst in one pass, calling frame_hook(presentation_index, frame) on every frame.

    skip_damaged: a video packet the decoder rejects as invalid data is skipped (its frames are not
    written) instead of failing the transcode; the caller accounts for the frames that are missing.

    The muxer is container_format, or the one for dst's suffix (see outputs.container_format_for).
    dst is written exactly as given; on failure it is closed and may hold a partial file, which the
    caller deletes. Raises EncodeError on every failure. ``encoder.codec: auto`` is resolved for the source.
    """
    cfg = for_source(cfg, info)

    def make_job(inp: av.container.InputContainer, out: av.container.OutputContainer, fmt_name: str) -> Transcoder:
        return Transcoder(inp, out, info, cfg, fmt_name, frame_hook, skip_damaged)

    return run_job(src, dst, make_job, container_format)


JobFactory = Callable[[av.container.InputContainer, av.container.OutputContainer, str], Transcoder]
"""Builds the transcode job (a Transcoder or a subclass) for an opened input, output and output format name."""


def output_format(dst: Path, container_format: str | None = None) -> str:
    """The muxer name for dst: container_format, or the one for dst's suffix; EncodeError if there is none."""
    try:
        return container_format or container_format_for(Path(dst).suffix)
    except ValueError as err:
        raise EncodeError("output_format", str(err)) from None


def run_job(src: Path, dst: Path, make_job: JobFactory, container_format: str | None = None) -> TranscodeStats:
    """Open src and dst, run the job ``make_job`` builds, close both; raise EncodeError on every failure."""
    start = time.monotonic()
    fmt_name = output_format(dst, container_format)
    try:
        inp = open_input(src)  # damaged tags are not UTF-8
    except av.error.FFmpegError as err:
        raise EncodeError("open", ffmpeg_message(err)) from None
    try:
        if not inp.streams.video:
            raise EncodeError("no_video", "the input has no video stream")
        try:
            out = av.open(str(dst), "w", format=fmt_name, container_options=muxer_options(fmt_name, inp))
        except av.error.FFmpegError as err:
            raise EncodeError("open_output", ffmpeg_message(err)) from None
        try:
            job = make_job(inp, out, fmt_name)
            job.run()
        except av.error.FFmpegError as err:
            close_quietly(out)
            raise EncodeError("transcode", ffmpeg_message(err)) from None
        except BaseException:
            close_quietly(out)
            raise
        try:
            out.close()
        except av.error.FFmpegError as err:
            raise EncodeError("mux", ffmpeg_message(err)) from None
    finally:
        inp.close()
    return job.stats(time.monotonic() - start)
