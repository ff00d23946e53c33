"""Broadcast material: interlaced input is encoded interlaced with its field order; SMPTE timecode is kept.

Every check is made on decoded output: the field order FFmpeg reports for the output stream, each
decoded frame's own field flags (read through FFmpeg's showinfo filter, as PyAV does not expose
``top_field_first``), the frame count, and the ``timecode`` tag FFmpeg reads back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import av.logging
import numpy as np
import pyarrow.parquet as pq
import pytest
from _clips import textured_rgb
from _video_checks import analysed_video, solid_config

from anonray.config import Config, MaskConfig
from anonray.ingest.probe import probe
from anonray.ingest.timecode import canonical
from anonray.qa.checks import check_output, inspect_output, output_problems
from anonray.records import tables
from anonray.render.codec.transcoder import interlace_mode, transcode
from anonray.render.mask import mask_frame
from anonray.render.outputs import output_relative_path
from anonray.render.video import render_video
from anonray.types import SHAPE_BOX, VideoInfo

FRAMES = 10
BOX = np.array([[40.0, 32.0, 88.0, 64.0]])


@dataclass(frozen=True)
class Clip:
    """A tiny clip to write: container, codec, field order ('tff', 'bff' or None), timecode tags."""

    fmt: str
    codec: str = "libx264"
    field: str | None = None
    rate: Fraction = Fraction(25)
    height: int = 96
    stream_timecode: str | None = None
    container_timecode: str | None = None
    gop_timecode: str | None = None


def _codec_options(clip: Clip) -> dict[str, str]:
    opts: dict[str, str] = {}
    if clip.codec == "libx264":
        opts["preset"] = "ultrafast"
        if clip.field:
            opts["x264-params"] = f"{clip.field}=1"
    if clip.gop_timecode:
        opts["gop_timecode"] = clip.gop_timecode
    return opts


def _setfield(clip: Clip, time_base: Fraction) -> av.filter.Graph:
    graph = av.filter.Graph()
    src = graph.add_buffer(width=160, height=clip.height, format="yuv420p", time_base=time_base)
    setfield, sink = graph.add("setfield", clip.field), graph.add("buffersink")
    src.link_to(setfield)
    setfield.link_to(sink)
    graph.configure()
    return graph


def write(path: Path, clip: Clip) -> Path:
    """FRAMES textured frames with a moving bright square; interlaced frames carry their field order."""
    out = av.open(str(path), "w", format=clip.fmt)
    out.metadata.update({"timecode": clip.container_timecode} if clip.container_timecode else {})
    vs = out.add_stream(clip.codec, rate=clip.rate, options=_codec_options(clip))
    vs.width, vs.height, vs.pix_fmt = 160, clip.height, "yuv420p"
    time_base = 1 / clip.rate
    vs.codec_context.time_base = time_base
    vs.metadata.update({"timecode": clip.stream_timecode} if clip.stream_timecode else {})
    graph = None
    if clip.field:
        vs.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        graph = _setfield(clip, time_base)
    base = textured_rgb(160, clip.height)
    for i in range(FRAMES):
        img = base.copy()
        img[8:24, i * 8 : i * 8 + 16] = 250
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, time_base
        if graph is not None:
            graph.push(frame)
            frame = graph.pull()
            frame.pts, frame.time_base = i, time_base
        for packet in vs.encode(frame):
            out.mux(packet)
    for packet in vs.encode(None):
        out.mux(packet)
    out.close()
    return path


def frame_fields(path: Path) -> str:
    """One letter per decoded frame: T (top field first), B (bottom field first) or P (progressive)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        graph = av.filter.Graph()
        src = graph.add_buffer(template=video)
        show, sink = graph.add("showinfo"), graph.add("buffersink")
        src.link_to(show)
        show.link_to(sink)
        graph.configure()
        level = av.logging.get_level()
        av.logging.set_level(av.logging.INFO)
        try:
            with av.logging.Capture(local=False) as logs:
                for frame in container.decode(video):
                    graph.push(frame)
                    graph.pull()
        finally:
            av.logging.set_level(level)
    return "".join(msg.split(" i:", 1)[1][0] for _, _, msg in logs if " i:" in msg)


def _presentation_pts(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.array(sorted(f.pts for f in c.decode(video=0)), np.int64)


def _masking_hook(index: int, frame: av.VideoFrame) -> av.VideoFrame:
    return mask_frame(frame, BOX, np.array([SHAPE_BOX]), MaskConfig(style="solid", color="000000"))


def _transcode(src: Path, out_dir: Path, cfg: Config | None = None, hook=_masking_hook) -> tuple[VideoInfo, Path]:
    info, _ = probe(src, src.name)
    cfg = cfg or Config()
    dst = out_dir / output_relative_path(src.name, info, cfg.audio)
    dst.parent.mkdir(parents=True, exist_ok=True)
    stats = transcode(src, dst, info, cfg, hook)
    assert stats.frames_in == stats.frames_out == FRAMES
    check_output(dst, info, _presentation_pts(src), cfg.audio, codec=cfg.encoder.codec)  # raises QAError
    return info, dst


# --------------------------------------------------------------------------- interlaced

INTERLACED = {
    "x264_tff.mp4": (Clip("mp4", field="tff"), "tt"),
    "x264_bff.mov": (Clip("mov", field="bff"), "bb"),
    "x264_bff.mkv": (Clip("matroska", field="bff"), "bb"),
    "mpeg2_tff.ts": (Clip("mpegts", "mpeg2video", field="tff"), "tt"),
    "mpeg2_bff.ts": (Clip("mpegts", "mpeg2video", field="bff"), "bb"),
    "mpeg2_tff.mxf": (Clip("mxf", "mpeg2video", field="tff"), "tt"),
}


@pytest.mark.parametrize("name", sorted(INTERLACED))
def test_interlaced_input_is_encoded_interlaced_with_its_field_order(name: str, tmp_path: Path) -> None:
    clip, order = INTERLACED[name]
    src = write(tmp_path / name, clip)
    info, dst = _transcode(src, tmp_path / "out")
    assert info.field_order == order
    out_info, _ = probe(dst, dst.name)
    assert out_info.video_codec == "h264" and out_info.field_order == order
    assert out_info.frame_count == FRAMES
    letter = "T" if order == "tt" else "B"
    assert frame_fields(src) == frame_fields(dst) == letter * FRAMES
    with av.open(str(dst)) as c:  # the mask covers the box in both fields
        for frame in c.decode(video=0):
            luma = frame.to_ndarray(format="gray").astype(int)
            assert luma[36:60, 44:84].max() <= 40


def test_unknown_field_order_is_coded_interlaced_as_each_frame_says(tmp_path: Path) -> None:
    src = write(tmp_path / "x264_bff.mp4", Clip("mp4", field="bff"))
    info, _ = probe(src, src.name)
    unknown = dataclasses.replace(info, field_order="unknown")
    dst = tmp_path / "out.mp4"
    transcode(src, dst, unknown, Config())
    assert frame_fields(dst) == "B" * FRAMES  # x264 follows each frame's flag
    # the stream-level order FFmpeg reports follows x264's initial (top-first) setting: known weakness
    assert probe(dst, dst.name)[0].field_order in ("tt", "bb")


def test_progressive_input_stays_progressive(tmp_path: Path) -> None:
    src = write(tmp_path / "progressive.mp4", Clip("mp4"))
    info, dst = _transcode(src, tmp_path / "out")
    assert info.field_order == probe(dst, dst.name)[0].field_order == "progressive"
    assert frame_fields(dst) == "P" * FRAMES


def test_render_path_keeps_bottom_field_first(tmp_path: Path) -> None:
    """ingest -> (analysed, no detections) -> render_video with its QA, on interlaced MPEG-2 in TS."""
    src = write(tmp_path / "archive.ts", Clip("mpegts", "mpeg2video", field="bff"))
    video = analysed_video(src, "archive.ts")
    out = tmp_path / "out"
    result = render_video(video, Config(), out, out / "_anonray")
    dst = out / result.output_path
    assert result.frames_out == FRAMES and dst.suffix == ".mp4"
    assert probe(dst, dst.name)[0].field_order == "bb"
    assert frame_fields(dst) == "B" * FRAMES


def test_libx265_codes_interlaced_frames_progressive_and_keeps_the_container_tag(tmp_path: Path) -> None:
    src = write(tmp_path / "x264_tff.mkv", Clip("matroska", field="tff"))
    cfg = Config().with_overrides(**{"encoder.codec": "libx265"})
    info, dst = _transcode(src, tmp_path / "out", cfg)
    out_info, _ = probe(dst, dst.name)
    assert out_info.video_codec == "hevc" and out_info.frame_count == FRAMES
    assert out_info.field_order == info.field_order == "tt"  # Matroska FieldOrder
    assert frame_fields(dst) == "P" * FRAMES


def _info(**changes) -> VideoInfo:
    base = VideoInfo(
        video_id="x", source_path="/in/a", relative_path="a", size_bytes=1, sha256="", container="mpegts",
        video_codec="mpeg2video", pixel_format="yuv420p", width=720, height=576, sample_aspect_ratio="16:15",
        fps=25.0, time_base="1/90000", start_pts=0, duration_seconds=1.0, frame_count=25, rotation=0,
        field_order="tt", variable_frame_rate=False,
    )
    return dataclasses.replace(base, **changes)


def test_interlace_mode() -> None:
    assert interlace_mode(_info(), "libx264") == "tff"
    assert interlace_mode(_info(field_order="tb"), "libx264") == "tff"
    assert interlace_mode(_info(field_order="bb"), "libx264") == "bff"
    assert interlace_mode(_info(field_order="bt"), "libx264") == "bff"
    assert interlace_mode(_info(field_order="unknown"), "libx264") == "auto"
    assert interlace_mode(_info(field_order="progressive"), "libx264") is None
    assert interlace_mode(_info(), "libx265") is None
    assert interlace_mode(_info(height=486), "libx264") is None  # 4:2:0: x264 needs a height divisible by 4
    assert interlace_mode(_info(height=486, pixel_format="yuv422p10le"), "libx264") == "tff"


# --------------------------------------------------------------------------- timecode

TIMECODES = {
    "stream_tag.mov": (Clip("mov", stream_timecode="10:00:00:00"), "10:00:00:00", ".mov"),
    "container_tag.mp4": (Clip("mp4", container_timecode="01:02:03:04"), "01:02:03:04", ".mp4"),
    "tag.mkv": (Clip("matroska", stream_timecode="23:59:59:24"), "23:59:59:24", ".mkv"),
    "gop.ts": (Clip("mpegts", "mpeg2video", field="tff", gop_timecode="09:59:50:00"), "09:59:50:00", ".mp4"),
    "drop_frame.mov": (Clip("mov", rate=Fraction(30000, 1001), stream_timecode="01:00:00;02"), "01:00:00;02",
                       ".mov"),
    # MXF material package timecode (container tag) over the MPEG-2 GOP headers' 00:00:00:00
    "archive.mxf": (Clip("mxf", "mpeg2video", field="tff", container_timecode="10:00:00:00"), "10:00:00:00",
                    ".mp4"),
}


@pytest.mark.parametrize("name", sorted(TIMECODES))
def test_timecode_is_kept(name: str, tmp_path: Path) -> None:
    clip, timecode, suffix = TIMECODES[name]
    src = write(tmp_path / name, clip)
    info, dst = _transcode(src, tmp_path / "out")
    assert info.timecode == timecode and dst.suffix == suffix
    assert probe(dst, dst.name)[0].timecode == timecode
    assert inspect_output(dst).timecode == timecode
    if suffix in (".mp4", ".mov"):
        with av.open(str(dst)) as c:  # the tmcd track
            tracks = [(s.metadata.get("handler_name"), s.metadata.get("timecode")) for s in c.streams.data]
        assert tracks == [("TimeCodeHandler", timecode)]


def test_no_timecode_no_tmcd_track(tmp_path: Path) -> None:
    src = write(tmp_path / "plain.mov", Clip("mov"))
    info, dst = _transcode(src, tmp_path / "out")
    assert info.timecode is None and inspect_output(dst).timecode is None
    with av.open(str(dst)) as c:
        assert not c.streams.data


def test_timecode_not_valid_at_the_rate_is_ignored(tmp_path: Path) -> None:
    src = write(tmp_path / "bad.mkv", Clip("matroska", stream_timecode="10:00:00:25"))  # frame 25 at 25 fps
    info, dst = _transcode(src, tmp_path / "out")
    assert info.timecode is None and inspect_output(dst).timecode is None


def test_canonical_timecode() -> None:
    assert canonical("10:00:00:00", 25) == "10:00:00:00"
    assert canonical(" 1:02:03:04 ", 25) == "01:02:03:04"
    assert canonical("01:00:00.02", 29.97) == "01:00:00;02"
    assert canonical("01:00:00;02", 59.94) == "01:00:00;02"
    assert canonical("01:00:00;02", 25) is None  # drop-frame only at multiples of 30000/1001
    assert canonical("10:00:00:25", 25) is None
    assert canonical("24:00:00:00", 25) is None
    assert canonical("10:60:00:00", 25) is None
    assert canonical("01:00:00;02", 0) == "01:00:00;02"  # rate unknown: the form alone
    assert canonical("garbage", 25) is None
    assert canonical(None, 25) is None


def test_qa_names_a_lost_timecode_and_field_order(tmp_path: Path) -> None:
    src = write(tmp_path / "plain.mp4", Clip("mp4"))
    info, dst = _transcode(src, tmp_path / "out")
    read = inspect_output(dst)
    pts = _presentation_pts(src)
    assert output_problems(read, info, pts, "keep") == []
    problems = " | ".join(output_problems(read, dataclasses.replace(info, timecode="10:00:00:00"), pts, "keep"))
    assert "start timecode is missing, the input's 10:00:00:00" in problems
    problems = " | ".join(output_problems(read, dataclasses.replace(info, field_order="bb"), pts, "keep"))
    assert "field order is progressive, the input's bb" in problems
    assert output_problems(read, dataclasses.replace(info, field_order="bb"), pts, "keep", codec="libx265") == []
    assert output_problems(read, dataclasses.replace(info, field_order="unknown"), pts, "keep") == []
    tag_only = dataclasses.replace(read, field_order="bb")  # a container tag on progressive-coded frames
    problems = " | ".join(output_problems(tag_only, dataclasses.replace(info, field_order="bb"), pts, "keep"))
    assert "frames are coded progressive, the input's are interlaced (bb)" in problems


# --------------------------------------------------------------------------- records


def test_video_info_json_with_and_without_timecode() -> None:
    info = _info(timecode="10:00:00:00")
    assert VideoInfo.from_json(info.to_json()) == info
    old = json.loads(info.to_json())
    del old["timecode"]  # JSON written before the field existed
    assert VideoInfo.from_json(json.dumps(old)).timecode is None


def test_videos_parts_without_the_timecode_column_still_load(tmp_path: Path) -> None:
    table = tables.to_table("videos", [{"run_id": "new", "video_id": "v", "path": "a.ts", "status": "ok",
                                        "timecode": "10:00:00:00"}])
    tables.write_part(tmp_path, "videos", "new", table)
    old = table.drop_columns(["timecode"]).set_column(0, "run_id", [["old"]])
    pq.write_table(old, tables.table_dir(tmp_path, "videos") / "part-old.parquet")
    rows = {r["run_id"]: r["timecode"] for r in tables.read_table(tmp_path, "videos").to_pylist()}
    assert rows == {"new": "10:00:00:00", "old": None}


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_anonray_run_on_interlaced_clip_with_timecode(ray_session, tmp_path: Path) -> None:
    from anonray.runtime.driver import RunRequest, run

    inputs = tmp_path / "in"
    inputs.mkdir()
    write(inputs / "broadcast.ts", Clip("mpegts", "mpeg2video", field="bff", gop_timecode="10:00:00:00"))
    summary = run(RunRequest([str(inputs)], tmp_path / "out", solid_config()))
    assert summary.ok == 1 and summary.exit_code == 0
    row = pq.read_table(tmp_path / "out" / "_anonray" / "videos").to_pylist()[0]
    assert (row["field_order"], row["timecode"], row["frames_out"]) == ("bb", "10:00:00:00", FRAMES)
    dst = tmp_path / "out" / "broadcast.mp4"
    out_info, _ = probe(dst, dst.name)
    assert (out_info.field_order, out_info.timecode) == ("bb", "10:00:00:00")
    assert frame_fields(dst) == "B" * FRAMES
