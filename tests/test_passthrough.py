"""Smart passthrough (render/codec/passthrough.py): GOPs without masks copied bit-exact, masked GOPs re-encoded, on real
decoded output (PyAV end to end)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from _clips import ClipSpec, _write_audio, audio_packets, probe_info, textured_rgb, write_clip
from _video_checks import analysed_video

from anonray.config import Config
from anonray.qa.checks import check_output
from anonray.records.rows import RunContext, ok_video_row, utc_now
from anonray.records.tables import to_table
from anonray.render.codec.bitstream import decode_timestamps, nal_unit_types
from anonray.render.codec.encode_stage import encode_video
from anonray.render.codec.passthrough import PassthroughOutcome, SourceIndex, plan_copies
from anonray.render.codec.transcoder import EncodeError
from anonray.render.video import MaskHook, render_video
from anonray.types import SHAPE_BOX, Detections, MaskPlan, VideoInfo

GOP = 25
GOPS = 10
MASKED_GOPS = (0, 4, 9)
BOX = (48, 32, 112, 96)
SEI_UUID = bytes(range(16))
SEI_TEXT = b"GPS 51.5074N 0.1278W owner=Jane Doe"
TIME_BASE = Fraction(1, 12800)
TICKS = 512  # per frame at 25 fps


def _user_data_sei(family: str) -> bytes:
    """An Annex B user-data-unregistered SEI NAL unit (payload type 5) holding SEI_TEXT."""
    payload = SEI_UUID + SEI_TEXT
    header = b"\x06" if family == "h264" else b"\x4e\x01"  # HEVC: prefix SEI (39), layer 0, temporal id 1
    return b"\x00\x00\x00\x01" + header + bytes([5, len(payload)]) + payload + b"\x80"


def write_gop_clip(path: Path, fmt: str = "mp4", codec: str = "libx264", gops: int = GOPS, gop: int = GOP,
                   sei: bool = True, audio: bool = True, size: tuple[int, int] = (192, 128)) -> Path:
    """A clip of ``gops`` closed GOPs of ``gop`` frames (B-frames on), a user-data SEI in every IDR packet."""
    family = "h264" if codec == "libx264" else "hevc"
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0"
    options = ({"x264-params": params} if family == "h264"
               else {"x265-params": f"{params}:open-gop=0:log-level=error"})
    out = av.open(str(path), "w", format=fmt)
    vs = out.add_stream(codec, rate=25, options=options)
    vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
    vs.codec_context.time_base = vs.time_base = TIME_BASE
    stream_audio = None
    if audio:
        stream_audio = out.add_stream("aac", rate=48000)
        stream_audio.codec_context.layout, stream_audio.codec_context.format = "stereo", "fltp"

    def mux(pkt: av.Packet) -> None:
        if sei and pkt.is_keyframe:
            tagged = av.Packet(_user_data_sei(family) + bytes(pkt))
            tagged.pts, tagged.dts, tagged.time_base, tagged.is_keyframe = pkt.pts, pkt.dts, pkt.time_base, True
            tagged.stream = vs
            pkt = tagged
        out.mux(pkt)

    base = textured_rgb(*size)
    for i in range(gops * gop):
        img = base.copy()
        x = (i * 3) % (size[0] - 16)
        img[4:20, x:x + 16] = 250
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i * TICKS, TIME_BASE
        for pkt in vs.encode(frame):
            mux(pkt)
    for pkt in vs.encode(None):
        mux(pkt)
    if stream_audio is not None:
        _write_audio(out, stream_audio, ClipSpec(), gops * gop / 25)
    out.close()
    return path


def source_pts(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.sort([p.pts for p in c.demux(c.streams.video[0]) if p.size])


def gop_plan(frame_count: int, gops: tuple[int, ...], gop: int = GOP, first: int = 3, last: int = 12) -> MaskPlan:
    """One box on frames first..last of each listed GOP."""
    frames = np.asarray([g * gop + i for g in gops for i in range(first, min(last, gop))], np.int64)
    frames = frames[frames < frame_count]
    n = frames.size
    return MaskPlan(frame_count, frames, np.tile(np.asarray(BOX, np.float32), (n, 1)), np.zeros(n, np.int64),
                    np.full(n, SHAPE_BOX, np.int64), np.zeros(n, np.int64))


@dataclass
class Rendered:
    src: Path
    out: Path
    info: VideoInfo
    pts: np.ndarray
    plan: MaskPlan
    outcome: PassthroughOutcome | None
    frames_decoded: int


def render(src: Path, out: Path, plan_gops: tuple[int, ...] = MASKED_GOPS, codec: str = "libx264",
           passthrough: bool = True, gop: int = GOP, frame_pts: np.ndarray | None = None) -> Rendered:
    info = probe_info(src)
    pts = source_pts(src)
    plan = gop_plan(pts.size, plan_gops, gop)
    cfg = Config().with_overrides(**{"encoder.passthrough": passthrough, "encoder.codec": codec,
                                     "mask.style": "solid"})
    analysed = pts if frame_pts is None else frame_pts
    stats, outcome = encode_video(src, out, info, cfg, MaskHook(plan, analysed, cfg), plan, analysed)
    assert stats.frames_out == pts.size
    check_output(out, info, pts, "keep", codec=codec)  # decodes end to end; frame count and every pts equal
    return Rendered(src, out, info, pts, plan, outcome, stats.frames_in)


def decoded(path: Path) -> dict[Fraction, np.ndarray]:
    """Every frame's luma and chroma (yuv420p ndarray) by presentation time in seconds."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return {f.pts * vs.time_base: f.to_ndarray(format="yuv420p") for f in c.decode(vs)}


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    folder = tmp_path_factory.mktemp("passthrough")
    src = write_gop_clip(folder / "src.mp4")
    return render(src, folder / "out.mp4")


def test_copies_clean_gops_and_reencodes_masked_ones(h264: Rendered) -> None:
    assert h264.outcome == PassthroughOutcome(gops_copied=7, gops_reencoded=3, frames_copied=7 * GOP)
    assert h264.frames_decoded == 3 * GOP  # only the masked GOPs were decoded


def test_output_is_frame_exact_and_copied_gops_bit_identical(h264: Rendered) -> None:
    src, out = decoded(h264.src), decoded(h264.out)
    assert list(out) == list(src) == [p * TIME_BASE for p in h264.pts]
    masked = set(h264.plan.frame_index.tolist())
    x0, y0, x1, y1 = BOX
    for i, t in enumerate(src):
        a, b = src[t].astype(int), out[t].astype(int)
        if i // GOP not in MASKED_GOPS:
            assert np.array_equal(a, b), f"copied frame {i} differs from the source"
            continue
        luma_a, luma_b = a[: 128], b[: 128]
        outside = np.ones_like(luma_a, bool)
        outside[y0:y1, x0:x1] = False
        assert np.abs(luma_a - luma_b)[outside].mean() < 3, f"re-encoded frame {i} drifts outside the mask"
        inside = np.abs(luma_a - luma_b)[y0:y1, x0:x1].mean()
        assert (inside > 40) == (i in masked), f"frame {i}: mean change {inside:.1f} inside the mask region"


def _nal_types_by_pts(path: Path) -> dict[int, set[int]]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return {p.pts: nal_unit_types(bytes(p), "h264", 4) for p in c.demux(vs) if p.size}


def test_copied_gops_carry_no_sei(h264: Rendered) -> None:
    before, after = _nal_types_by_pts(h264.src), _nal_types_by_pts(h264.out)
    idr_pts = [int(p) for p in h264.pts[::GOP]]
    assert all(6 in before[p] for p in idr_pts)  # the source has a user-data SEI in every GOP
    for gop, p in enumerate(idr_pts):
        if gop not in MASKED_GOPS:
            assert 6 not in after[p] and {7, 8, 5} <= after[p]  # SEI gone, SPS/PPS in-band before the IDR
    copied = [p for i, p in enumerate(h264.pts) if i // GOP not in MASKED_GOPS]
    assert not any(6 in after[int(p)] for p in copied)
    assert SEI_TEXT in h264.src.read_bytes() and SEI_TEXT not in h264.out.read_bytes()
    with av.open(str(h264.out)) as c:
        assert c.streams.video[0].codec_context.codec_tag == "avc3"  # parameter sets may change in-band


def test_audio_is_copied(h264: Rendered) -> None:
    assert audio_packets(h264.out) == audio_packets(h264.src)


@pytest.mark.parametrize(("fmt", "suffix", "out_suffix"), [("matroska", ".mkv", ".mkv"), ("mpegts", ".ts", ".mp4"),
                                                          ("mov", ".mov", ".mov")])
def test_other_containers(tmp_path: Path, fmt: str, suffix: str, out_suffix: str) -> None:
    """Matroska (no dts on some packets), MPEG-TS (Annex B, parameter sets in-band) and MOV sources."""
    src = write_gop_clip(tmp_path / f"src{suffix}", fmt=fmt, gops=4, audio=False)
    done = render(src, tmp_path / f"out{out_suffix}", plan_gops=(1,))
    assert done.outcome == PassthroughOutcome(gops_copied=3, gops_reencoded=1, frames_copied=3 * GOP)
    src_frames, out_frames = decoded(src), decoded(done.out)
    for i, t in enumerate(src_frames):
        if i // GOP != 1:
            assert np.array_equal(src_frames[t], out_frames[t])


def test_hevc(tmp_path: Path) -> None:
    src = write_gop_clip(tmp_path / "src.mp4", codec="libx265", gops=4, gop=10, audio=False, size=(128, 96))
    done = render(src, tmp_path / "out.mp4", plan_gops=(2,), codec="libx265", gop=10)
    assert done.outcome == PassthroughOutcome(gops_copied=3, gops_reencoded=1, frames_copied=30)
    src_frames, out_frames = decoded(src), decoded(done.out)
    assert list(src_frames) == list(out_frames)
    assert all(np.array_equal(src_frames[t], out_frames[t]) for i, t in enumerate(src_frames) if i // 10 != 2)
    assert SEI_TEXT in src.read_bytes() and SEI_TEXT not in done.out.read_bytes()
    with av.open(str(done.out)) as c:
        assert c.streams.video[0].codec_context.codec_tag == "hev1"


@pytest.mark.parametrize(("vcodec", "fmt"), [("mpeg4", "mp4"), ("mpeg2video", "mpegts")])
def test_other_codecs_fall_back_to_full_reencode(tmp_path: Path, vcodec: str, fmt: str) -> None:
    src = write_clip(tmp_path / f"src.{fmt}", ClipSpec(fmt=fmt, vcodec=vcodec, frames=30, acodec=None,
                                                       width=192, height=128))
    done = render(src, tmp_path / "out.mp4", plan_gops=(0,))
    assert done.outcome is not None and done.outcome.gops_copied == 0
    assert vcodec in (done.outcome.fallback or "")
    assert done.frames_decoded == 30  # the full re-encode decoded everything


def test_switch_off_is_the_full_reencode(tmp_path: Path) -> None:
    src = write_gop_clip(tmp_path / "src.mp4", gops=2, audio=False)
    done = render(src, tmp_path / "out.mp4", plan_gops=(0,), passthrough=False)
    assert done.outcome is None and done.frames_decoded == 2 * GOP


def test_all_gops_masked_falls_back(tmp_path: Path) -> None:
    src = write_gop_clip(tmp_path / "src.mp4", gops=2, audio=False)
    done = render(src, tmp_path / "out.mp4", plan_gops=(0, 1))
    assert done.outcome is not None and done.outcome.gops_copied == 0 and "no GOP" in done.outcome.fallback


def test_frame_detection_never_saw_is_never_copied(tmp_path: Path) -> None:
    """A GOP with a frame detection did not analyse is re-encoded, so the mask hook refuses it as in the
    full re-encode (no unchecked frame reaches the output by being copied)."""
    src = write_gop_clip(tmp_path / "src.mp4", gops=3, audio=False)
    analysed = source_pts(src).copy()
    analysed[2 * GOP + 4] = -1  # in GOP 2, which has no mask
    with pytest.raises(EncodeError, match="not seen by detection"):
        render(src, tmp_path / "out.mp4", plan_gops=(0,), frame_pts=analysed)


def _index(pts: list[int], idr: list[bool], params: list[bool] | None = None, prefixed: bool = True) -> SourceIndex:
    p = np.asarray(pts, np.int64)
    return SourceIndex(p, decode_timestamps(p, [None] * len(pts)), np.asarray(idr, bool),
                       np.asarray(params or [False] * len(pts), bool), prefixed)


def test_plan_copies_whole_idr_periods() -> None:
    # IDR | P P I(open GOP, not IDR) P | IDR P | IDR P
    index = _index(list(range(10)), [True, False, False, False, False, True, False, True, False, False])
    plan = plan_copies(index, analysed_pts=np.arange(10), masked_pts=np.asarray([3]))
    assert plan.copy.tolist() == [False] * 5 + [True] * 5  # the open GOP goes with its IDR period
    assert (plan.gops_copied, plan.gops_reencoded, plan.frames_copied) == (2, 1, 5)


def test_plan_copies_never_copies_a_cut_start_or_unanalysed_frames() -> None:
    index = _index(list(range(6)), [False, False, True, False, True, False])
    plan = plan_copies(index, analysed_pts=np.asarray([0, 1, 2, 3, 4]), masked_pts=np.zeros(0, np.int64))
    assert plan.copy.tolist() == [False, False, True, True, False, False]


def test_plan_copies_needs_parameter_sets() -> None:
    """Annex B (MPEG-TS) needs them in-band at the GOP start; length-prefixed sources with some in-band
    parameter sets need them at the GOP start too (the extradata may be stale)."""
    idr = [True, False, True, False]
    for prefixed in (False, True):
        index = _index([0, 1, 2, 3], idr, params=[True, False, False, False], prefixed=prefixed)
        plan = plan_copies(index, np.arange(4), np.zeros(0, np.int64))
        assert plan.copy.tolist() == [True, True, False, False]
    index = _index([0, 1, 2, 3], idr, prefixed=True)  # none in-band: the avcC's apply
    assert plan_copies(index, np.arange(4), np.zeros(0, np.int64)).copy.all()


def test_decode_timestamps() -> None:
    pts = np.asarray([0, 3, 1, 2, 6, 4, 5], np.int64) * 40  # I P B B P B B
    dts = decode_timestamps(pts, [None] * 7)
    assert np.all(np.diff(dts) > 0) and np.all(dts <= pts)
    assert decode_timestamps(pts, [-40, 0, 40, 80, 120, 160, 200]).tolist() == [-40, 0, 40, 80, 120, 160, 200]


def test_nal_unit_types() -> None:
    annexb = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x01\x65\xcc"
    assert nal_unit_types(annexb, "h264", None) == {7, 8, 5}
    prefixed = b"\x00\x00\x00\x02\x06\x05" + b"\x00\x00\x00\x02\x65\x88"
    assert nal_unit_types(prefixed, "h264", 4) == {6, 5}
    assert nal_unit_types(b"\x00\x00\x01\x26\x01\xaf", "hevc", None) == {19}


def test_render_video_records_what_was_copied(tmp_path: Path) -> None:
    """render/video.py with encoder.passthrough: detections on GOP 1 only (tracking adds 5 frames of roll each way,
    still inside GOP 1), the others copied; the videos row records it and passes render's QA."""
    (tmp_path / "in").mkdir()
    src = write_gop_clip(tmp_path / "in" / "clip.mp4", gops=4)
    video = analysed_video(src, "clip.mp4")
    frames = np.arange(GOP + 5, 2 * GOP - 5)
    video.detections = Detections(frames, np.tile(np.asarray(BOX, np.float32), (frames.size, 1)),
                                  np.full(frames.size, 0.9, np.float32), np.zeros(frames.size, np.int64))
    cfg = Config().with_overrides(**{"encoder.passthrough": True})
    result = render_video(video, cfg, tmp_path / "out", tmp_path / "out" / "_anonray")
    assert result.passthrough == PassthroughOutcome(gops_copied=3, gops_reencoded=1, frames_copied=3 * GOP)
    row = ok_video_row(RunContext("run", cfg, {}), video, result, started=utc_now(), seconds_ingest=0.0)
    assert (row["gops_copied"], row["frames_copied"], row["passthrough_fallback"]) == (3, 3 * GOP, None)
    to_table("videos", [row])  # the schema has the columns
    src_frames, out_frames = decoded(src), decoded(tmp_path / "out" / result.output_path)
    assert all(np.array_equal(src_frames[t], out_frames[t]) for i, t in enumerate(src_frames) if i // GOP != 1)
    assert not all(np.array_equal(src_frames[t], out_frames[t]) for i, t in enumerate(src_frames) if i // GOP == 1)
