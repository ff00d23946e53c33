"""Ingest: probing, the packet index, segment planning and clear errors on bad input."""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from anonray.ingest.probe import IngestError, PacketIndex, plan_segments, probe, sha256_file, video_id_for
from anonray.testing.samples import SAMPLE_FORMATS, write_audio_only
from anonray.types import Segment, VideoInfo
from benchmarks.accuracy.datasets import DEFAULT_DATA

REAL_VIDEOS = DEFAULT_DATA / "videos"
TARGET = 0.5
AUDIO_DECODER = {"libopus": "opus"}


def _presentation_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [f.pts for f in c.decode(c.streams.video[0])]


def _check_coverage(info: VideoInfo, segments: list[Segment]) -> None:
    """Contiguous, non-overlapping, every frame exactly once."""
    assert segments[0].start_pts == info.start_pts
    assert segments[0].first_frame_index == 0
    assert segments[-1].end_pts is None
    first = 0
    for i, seg in enumerate(segments):
        assert seg.index == i and seg.video_id == info.video_id
        assert seg.first_frame_index == first
        assert seg.frame_count > 0
        first += seg.frame_count
        if i + 1 < len(segments):
            assert seg.end_pts == segments[i + 1].start_pts
            assert seg.keyframe_pts == seg.start_pts or i == 0
    assert first == info.frame_count


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path, chunk=65536) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_video_id_is_stable_prefix() -> None:
    assert video_id_for("a/b.mp4") == hashlib.sha256(b"a/b.mp4").hexdigest()[:12]
    assert video_id_for("a/b.mp4") != video_id_for("a/c.mp4")


@pytest.mark.parametrize("name", list(SAMPLE_FORMATS))
def test_probe_sample(name: str, sample_clips: dict) -> None:
    path, truth = sample_clips[name]
    info, segments = probe(path, f"clips/{path.name}", target_seconds=TARGET)
    assert info.video_id == video_id_for(f"clips/{path.name}")
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size_bytes == path.stat().st_size
    assert (info.width, info.height) == (truth.width, truth.height)
    assert info.frame_count == truth.frame_count == len(_presentation_pts(path))
    assert info.rotation == truth.rotation
    assert info.field_order == ("tt" if truth.interlaced else "progressive")
    assert info.variable_frame_rate == truth.vfr
    assert info.sample_aspect_ratio == "1:1"
    if not truth.vfr:
        assert info.fps == pytest.approx(truth.fps)
    assert info.duration_seconds == pytest.approx(
        truth.times[-1] + (truth.times[-1] - truth.times[-2]), abs=1e-3
    )
    assert len(info.audio) == 1
    audio = info.audio[0]
    assert audio.codec == AUDIO_DECODER.get(truth.audio.codec, truth.audio.codec)
    assert audio.sample_rate == truth.audio.sample_rate
    assert audio.channels == truth.audio.channels
    assert audio.packets > 0
    assert audio.duration_seconds == pytest.approx(truth.times[-1], abs=0.3)
    assert VideoInfo.from_json(info.to_json()) == info
    _check_coverage(info, segments)
    assert len(segments) >= 2


def test_vfr_timestamps_preserved(sample_clips: dict) -> None:
    path, truth = sample_clips["vfr_mp4"]
    info, _ = probe(path, "vfr.mp4")
    pts = np.array(_presentation_pts(path))
    seconds = (pts - info.start_pts) * float(info.time_base_fraction)
    assert info.time_base == "1/90000"
    np.testing.assert_allclose(seconds, truth.times, atol=1.5 / 90000)
    assert len(set(np.diff(pts).tolist())) > 2


def test_open_gop_leading_frames_stay_with_previous_segment(sample_clips: dict) -> None:
    """In MPEG-2 and HEVC open GOPs some frames follow a keyframe in decode order but precede it in time."""
    for name in ("mpeg2_ts", "hevc_mkv"):
        path, _ = sample_clips[name]
        info, segments = probe(path, path.name, target_seconds=TARGET)
        with av.open(str(path)) as c:
            decode_order = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
        starts = {s.start_pts for s in segments[1:]}
        leading = [
            pts
            for i, pts in enumerate(decode_order)
            if any(k in starts and k > pts for k in decode_order[:i])
        ]
        assert leading, f"{name}: sample has no open GOP"
        for pts in leading:
            owner = next(s for s in segments if s.start_pts <= pts and (s.end_pts is None or pts < s.end_pts))
            assert owner.start_pts < pts


# --------------------------------------------------------------------------- plan_segments


def _index(pts: list[int], keys: list[int]) -> PacketIndex:
    return PacketIndex(np.array(sorted(pts), np.int64), np.array(sorted(keys), np.int64))


def test_plan_merges_short_gops() -> None:
    index = _index(list(range(0, 100)), [0, 10, 20, 30, 40, 50, 60, 70, 80, 90])
    segs = plan_segments("v", index, Fraction(1, 10), target_seconds=2.5)
    assert [(s.start_pts, s.end_pts, s.frame_count) for s in segs] == [
        (0, 30, 30),
        (30, 60, 30),
        (60, 90, 30),
        (90, None, 10),
    ]
    assert [s.first_frame_index for s in segs] == [0, 30, 60, 90]
    assert all(s.keyframe_pts == s.start_pts for s in segs)


def test_plan_stream_starting_with_non_key_frames() -> None:
    index = _index(list(range(5, 40)), [12, 24, 36])
    segs = plan_segments("v", index, Fraction(1, 10), target_seconds=1.0)
    assert segs[0].start_pts == 5 and segs[0].keyframe_pts == 12
    assert segs[0].end_pts == 24 and segs[0].frame_count == 19
    assert sum(s.frame_count for s in segs) == 35


def test_plan_without_keyframes_is_one_segment() -> None:
    segs = plan_segments("v", _index([3, 1, 2], []), Fraction(1, 25), target_seconds=1.0)
    assert [(s.start_pts, s.end_pts, s.frame_count, s.keyframe_pts) for s in segs] == [(1, None, 3, 1)]


def test_plan_empty_index() -> None:
    assert plan_segments("v", _index([], []), Fraction(1, 25), 1.0) == []


# --------------------------------------------------------------------------- errors


def _expect(path: Path, error_class: str | None = None) -> IngestError:
    with pytest.raises(IngestError) as excinfo:
        probe(path, f"in/{path.name}")
    err = excinfo.value
    if error_class is not None:
        assert err.error_class == error_class
    assert str(path.parent) not in str(err)
    assert err.error_class and str(err)
    return err


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    _expect(path, "empty_file")


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "gone.mp4", "input_vanished")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    err = _expect(path)
    assert err.error_class in {"not_a_video", "no_video_stream", "no_video_frames", "undecodable"}


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 200)
    err = _expect(path)
    assert err.error_class == "text_file"


def test_audio_only(tmp_path: Path) -> None:
    path = tmp_path / "speech.m4a"
    write_audio_only(path)
    err = _expect(path, "no_video_stream")
    assert "audio" in str(err)


# --------------------------------------------------------------------------- real clips


def _real_clips() -> list[Path]:
    return sorted(REAL_VIDEOS.glob("*.mp4")) if REAL_VIDEOS.is_dir() else []


@pytest.mark.skipif(
    not REAL_VIDEOS.is_dir(), reason=f"{REAL_VIDEOS} is absent (real test clips not installed)"
)
@pytest.mark.parametrize("path", _real_clips(), ids=lambda p: p.stem)
def test_probe_real_clip(path: Path) -> None:
    info, segments = probe(path, path.name, target_seconds=2.0)
    assert info.frame_count == len(_presentation_pts(path))
    assert info.width > 0 and info.height > 0 and info.fps > 0
    _check_coverage(info, segments)
