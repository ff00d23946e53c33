"""End-to-end transcodes of tiny synthetic clips: geometry, timing, audio and metadata survive."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from _clips import ClipSpec, audio_packets, decoded_pts, probe_info, write_clip

from anonray.config import Config, MaskConfig
from anonray.render.codec.transcoder import EncodeError, transcode, working_pixel_format
from anonray.render.mask import mask_frame
from anonray.render.outputs import container_format_for, output_relative_path
from anonray.types import SHAPE_BOX, AudioStreamInfo, VideoInfo

CASES = {
    "h264_aac.mp4": ClipSpec(metadata={"location": "+48.8577+002.2950/", "title": "holiday"}),
    "vfr.mp4": ClipSpec(acodec=None, time_base=Fraction(1, 90000),
                        pts=[0, 3000, 9000, 10000, 20000, 21000, 40000, 41000, 42000, 60000]),
    "rotated.mp4": ClipSpec(rotation=90, sar=Fraction(4, 3), frames=12),
    "mjpeg_pcm.mov": ClipSpec(fmt="mov", vcodec="mjpeg", pix_fmt="yuvj422p", acodec="pcm_s16le",
                              a_sample_fmt="s16", metadata={"location": "+48.8577+002.2950/"}),
    "mpeg2_mp2.ts": ClipSpec(fmt="mpegts", vcodec="mpeg2video", acodec="mp2", a_sample_fmt="s16"),
    "pcm.avi": ClipSpec(fmt="avi", vcodec="mjpeg", pix_fmt="yuvj420p", acodec="pcm_s16le",
                        a_sample_fmt="s16"),
    "odd_444.mkv": ClipSpec(fmt="matroska", width=161, height=97, pix_fmt="yuv444p", acodec="libopus",
                            a_sample_fmt="s16", frames=10),
}
EXPECTED_NAME = {
    "h264_aac.mp4": "h264_aac.mp4", "vfr.mp4": "vfr.mp4", "rotated.mp4": "rotated.mp4",
    "mjpeg_pcm.mov": "mjpeg_pcm.mov", "mpeg2_mp2.ts": "mpeg2_mp2.mp4", "pcm.avi": "pcm.mkv",
    "odd_444.mkv": "odd_444.mkv",
}
ONE_MS = Fraction(1, 1000)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {name: write_clip(root / name, spec) for name, spec in CASES.items()}


def _run(src: Path, dst_dir: Path, cfg: Config | None = None, hook=None) -> tuple[Path, object]:
    info = probe_info(src)
    dst = dst_dir / output_relative_path(src.name, info, (cfg or Config()).audio)
    stats = transcode(src, dst, info, cfg or Config(), hook)
    return dst, stats


def _times_match(a: list[Fraction], b: list[Fraction]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= ONE_MS for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_transcode_preserves_stream(clips: dict[str, Path], tmp_path: Path, name: str) -> None:
    src = clips[name]
    dst, stats = _run(src, tmp_path)
    assert dst.name == EXPECTED_NAME[name]
    before, after = probe_info(src), probe_info(dst)
    assert stats.frames_in == stats.frames_out == before.frame_count
    assert after.frame_count == before.frame_count
    assert (after.width, after.height) == (before.width, before.height)
    assert after.sample_aspect_ratio == before.sample_aspect_ratio
    assert after.rotation == before.rotation
    assert after.video_codec == "h264"
    pts_in, pts_out = decoded_pts(src), decoded_pts(dst)
    assert len(pts_out) == len(pts_in)
    if Fraction(after.time_base) == Fraction(before.time_base):
        assert pts_out == pts_in
    else:
        assert _times_match(pts_in, pts_out)
    audio_in, audio_out = audio_packets(src), audio_packets(dst)
    assert stats.audio_packets_copied == len(audio_in)
    assert [p for p, _ in audio_out] == [p for p, _ in audio_in]
    assert _times_match([t for _, t in audio_in], [t for _, t in audio_out])


def test_exact_timestamps_for_vfr(clips: dict[str, Path], tmp_path: Path) -> None:
    dst, _ = _run(clips["vfr.mp4"], tmp_path)
    expected = [Fraction(p, 90000) for p in CASES["vfr.mp4"].pts or []]
    assert decoded_pts(dst) == expected


@pytest.mark.parametrize("name", ["h264_aac.mp4", "mjpeg_pcm.mov", "odd_444.mkv"])
def test_metadata_is_dropped(clips: dict[str, Path], tmp_path: Path, name: str) -> None:
    dst, _ = _run(clips[name], tmp_path)
    with av.open(str(dst)) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}
        stream_keys = {k.lower() for s in c.streams for k in s.metadata}
    assert tags.pop("comment") == "anonray 0.1.0"
    muxer_tags = {"major_brand", "minor_version", "compatible_brands", "encoder"}
    assert set(tags) <= muxer_tags, tags
    assert "encoder" not in tags or tags["encoder"] == "Lavf"  # Matroska's bit-exact muxing app
    assert not any("location" in k or "title" in k for k in tags)
    assert stream_keys <= {"language", "handler_name", "vendor_id", "duration"}


def test_full_range_and_chroma_kept(clips: dict[str, Path], tmp_path: Path) -> None:
    dst, _ = _run(clips["mjpeg_pcm.mov"], tmp_path)
    with av.open(str(dst)) as c:
        frame = next(c.decode(video=0))
    assert frame.format.name in ("yuvj422p", "yuv422p")
    assert frame.color_range == 2


def test_audio_drop_and_reencode(clips: dict[str, Path], tmp_path: Path) -> None:
    src = clips["mjpeg_pcm.mov"]
    info = probe_info(src)
    dropped = tmp_path / "dropped.mp4"
    stats = transcode(src, dropped, info, Config(audio="drop"))
    assert stats.audio_packets_copied == 0 and audio_packets(dropped) == []
    forced = tmp_path / "forced.mp4"  # PCM does not fit MP4: re-encoded to AAC
    stats = transcode(src, forced, info, Config())
    assert stats.audio_packets_copied == 0 and stats.audio_frames_reencoded > 0
    with av.open(str(forced)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"


def test_hook_masks_box_and_leaves_rest(clips: dict[str, Path], tmp_path: Path) -> None:
    src = clips["h264_aac.mp4"]
    cfg = MaskConfig(style="solid", color="000000")
    seen: list[int] = []

    def hook(index: int, frame: av.VideoFrame) -> av.VideoFrame:
        seen.append(index)
        return mask_frame(frame, np.array([[100.0, 40.0, 140.0, 80.0]]), np.array([SHAPE_BOX]), cfg)

    dst, _ = _run(src, tmp_path, hook=hook)
    assert seen == list(range(CASES["h264_aac.mp4"].frames))
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        for fa, fb in zip(a.decode(video=0), b.decode(video=0), strict=True):
            ya, yb = fa.to_ndarray(format="gray").astype(int), fb.to_ndarray(format="gray").astype(int)
            assert np.abs(yb[44:76, 104:136]).max() <= 20  # black (full-range gray view)
            assert np.abs(ya[44:76, 104:136] - yb[44:76, 104:136]).mean() > 30
            assert np.abs(ya[:, :80] - yb[:, :80]).mean() < 3


def test_hook_failure_raises_encode_error(clips: dict[str, Path], tmp_path: Path) -> None:
    def hook(index: int, frame: av.VideoFrame) -> av.VideoFrame:
        raise RuntimeError("boom")

    with pytest.raises(EncodeError) as err:
        _run(clips["vfr.mp4"], tmp_path, hook=hook)
    assert err.value.error_class == "mask"


def test_unreadable_input_raises(clips: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    info = probe_info(clips["vfr.mp4"])
    with pytest.raises(EncodeError) as err:
        transcode(bad, tmp_path / "out.mp4", info, Config())
    assert err.value.error_class == "open"
    assert str(tmp_path) not in str(err.value)


def _info_with_audio(*codecs: str) -> VideoInfo:
    return VideoInfo(
        video_id="x", source_path="/in/a", relative_path="a", size_bytes=1, sha256="", container="",
        video_codec="h264", pixel_format="yuv420p", width=2, height=2, sample_aspect_ratio="1:1",
        fps=25.0, time_base="1/25", start_pts=0, duration_seconds=1.0, frame_count=25, rotation=0,
        field_order="progressive", variable_frame_rate=False,
        audio=tuple(AudioStreamInfo(i, c, 48000, 2, None, 0) for i, c in enumerate(codecs)),
    )


@pytest.mark.parametrize(
    ("rel", "codecs", "mode", "expected"),
    [
        ("a/b/clip.MP4", ("aac",), "keep", "a/b/clip.MP4"),
        ("clip.m4v", ("aac",), "keep", "clip.m4v"),
        ("clip.mov", ("pcm_s16le",), "keep", "clip.mov"),
        ("clip.mov", ("opus",), "keep", "clip.mp4"),
        ("clip.mkv", ("pcm_s24le", "aac"), "keep", "clip.mkv"),
        ("clip.mkv", ("aac",), "keep", "clip.mkv"),
        ("d/clip.avi", ("mp3float",), "keep", "d/clip.mp4"),
        ("d/clip.avi", ("pcm_s16le",), "keep", "d/clip.mkv"),
        ("d/clip.avi", ("pcm_s16le",), "drop", "d/clip.mp4"),
        ("x.y.mts", ("ac3",), "keep", "x.y.mp4"),
        ("cam.dav", (), "keep", "cam.mp4"),
        ("clip.webm", ("opus",), "keep", "clip.mp4"),
        ("clip.wmv", ("wmav2",), "keep", "clip.mkv"),
    ],
)
def test_output_relative_path(rel: str, codecs: tuple[str, ...], mode: str, expected: str) -> None:
    assert output_relative_path(rel, _info_with_audio(*codecs), mode) == expected


def test_working_pixel_format() -> None:
    assert working_pixel_format("yuv420p", 640, 480) == ("yuv420p", False)
    assert working_pixel_format("yuvj420p", 640, 480) == ("yuv420p", True)
    assert working_pixel_format("yuvj422p", 640, 480) == ("yuv422p", True)
    assert working_pixel_format("yuv422p10le", 640, 480) == ("yuv422p10le", False)
    assert working_pixel_format("yuv444p", 640, 480) == ("yuv444p", False)
    assert working_pixel_format("yuv420p", 641, 480) == ("yuv444p", False)
    assert working_pixel_format("rgb24", 640, 480) == ("yuv420p", False)
    assert working_pixel_format("nv12", 640, 480) == ("yuv420p", False)


def test_container_format_for() -> None:
    assert container_format_for(".MP4") == "mp4"
    assert container_format_for("m4v") == "mp4"
    assert container_format_for(".mov") == "mov"
    assert container_format_for(".mkv") == "matroska"
    with pytest.raises(ValueError):
        container_format_for(".avi")
