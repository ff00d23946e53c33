"""Segment decoding is frame-exact: the segments together give exactly a straight full decode."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from anonray.decode.segment import INTERPOLATION, DecodeError, decode_segment
from anonray.ingest.probe import probe
from anonray.testing.samples import SAMPLE_FORMATS
from benchmarks.accuracy.datasets import DEFAULT_DATA

REAL_VIDEOS = DEFAULT_DATA / "videos"
TARGET = 0.5


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(array.tobytes()).hexdigest()


def _straight(path: Path, out_size: tuple[int, int] | None = None) -> list[tuple[int, str]]:
    """(pts, pixel hash) of every frame from one uninterrupted decode."""
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.video[0]):
            if out_size is not None:
                frame = frame.reformat(width=out_size[0], height=out_size[1], format="rgb24",
                                       interpolation=INTERPOLATION)
            out.append((frame.pts, _digest(frame.to_ndarray(format="rgb24"))))
    return out


def _by_segments(path: Path, target: float, out_size: tuple[int, int] | None = None) -> tuple[list, list]:
    info, segments = probe(path, path.name, target_seconds=target)
    indices, frames = [], []
    for seg in segments:
        for index, pts, array in decode_segment(path, info, seg, out_size=out_size):
            indices.append(index)
            frames.append((pts, _digest(array)))
    return indices, frames


@pytest.mark.parametrize("name", list(SAMPLE_FORMATS))
def test_segments_match_straight_decode(name: str, sample_clips: dict) -> None:
    path, truth = sample_clips[name]
    indices, frames = _by_segments(path, TARGET)
    reference = _straight(path)
    assert [p for p, _ in frames] == [p for p, _ in reference]
    assert frames == reference
    assert indices == list(range(truth.frame_count))


def test_downscaled_output(sample_clips: dict) -> None:
    path, _ = sample_clips["mpeg2_ts"]
    info, segments = probe(path, path.name, target_seconds=TARGET)
    arrays = [a for _, _, a in decode_segment(path, info, segments[1], out_size=(180, 144))]
    assert len(arrays) == segments[1].frame_count
    assert all(a.shape == (144, 180, 3) and a.dtype == np.uint8 for a in arrays)
    gray = next(iter(decode_segment(path, info, segments[0], out_size=(90, 72), pix_fmt="gray")))[2]
    assert gray.shape == (72, 90)


def test_vfr_pts_preserved(sample_clips: dict) -> None:
    path, truth = sample_clips["vfr_mp4"]
    info, segments = probe(path, path.name, target_seconds=TARGET)
    pts = [p for seg in segments for _, p, _ in decode_segment(path, info, seg, out_size=(64, 48))]
    seconds = (np.array(pts) - info.start_pts) * float(info.time_base_fraction)
    np.testing.assert_allclose(seconds, truth.times, atol=1.5 / 90000)


def test_planted_targets_are_where_truth_says(sample_clips: dict) -> None:
    path, truth = sample_clips["h264_mp4"]
    info, segments = probe(path, path.name, target_seconds=TARGET)
    i = segments[1].first_frame_index
    frame = next(iter(decode_segment(path, info, segments[1], pix_fmt="gray")))[2].astype(np.float32)
    x0, y0, x1, y1 = truth.face_boxes[i]
    px0, py0, px1, py1 = truth.plate_boxes[i]
    assert 0 <= x0 < x1 <= truth.width and 0 <= y0 < y1 <= truth.height
    plate = frame[py0 + 3 : py1 - 3, px0 + 3 : px1 - 3]
    assert (plate > 150).mean() > 0.4 and (plate < 60).mean() > 0.1, "light plate with dark characters"
    assert frame[y0:y1, x0:x1].std() > 20


def test_missing_frames_raise(sample_clips: dict) -> None:
    path, _ = sample_clips["h264_mp4"]
    info, segments = probe(path, path.name, target_seconds=TARGET)
    last = segments[-1]
    greedy = dataclasses.replace(last, frame_count=last.frame_count + 3)
    with pytest.raises(DecodeError) as excinfo:
        list(decode_segment(path, info, greedy, out_size=(32, 24)))
    assert excinfo.value.error_class == "missing_frames"
    assert "3 of" in str(excinfo.value)


def test_stops_once_segment_is_complete(sample_clips: dict) -> None:
    path, _ = sample_clips["hevc_mkv"]
    info, segments = probe(path, path.name, target_seconds=TARGET)
    got = list(decode_segment(path, info, segments[0], out_size=(32, 24)))
    assert len(got) == segments[0].frame_count
    assert all(segments[0].start_pts <= p < segments[0].end_pts for _, p, _ in got)


def _real_clips() -> list[Path]:
    return sorted(REAL_VIDEOS.glob("*.mp4")) if REAL_VIDEOS.is_dir() else []


@pytest.mark.skipif(
    not REAL_VIDEOS.is_dir(), reason=f"{REAL_VIDEOS} is absent (real test clips not installed)"
)
@pytest.mark.parametrize("path", _real_clips(), ids=lambda p: p.stem)
def test_real_clip_segments_frame_exact(path: Path) -> None:
    size = (160, 96)
    indices, frames = _by_segments(path, 2.0, out_size=size)
    reference = _straight(path, out_size=size)
    assert [p for p, _ in frames] == [p for p, _ in reference]
    assert frames == reference
    assert indices == list(range(len(reference)))


@pytest.mark.parametrize("name", ["mpeg2_ts", "hevc_mkv"])
def test_stream_cut_mid_gop(name: str, sample_clips: dict, tmp_path: Path) -> None:
    """A file that starts with non-key frames: undecodable leading frames are left out of the index."""
    src, _ = sample_clips[name]
    dst = tmp_path / f"cut{src.suffix}"
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        packets = [p for p in inp.demux(inp.streams.video[0]) if p.size]
        for packet in packets[4:]:
            packet.stream = stream
            out.mux(packet)
    reference = _straight(dst, out_size=(64, 48))
    indices, frames = _by_segments(dst, TARGET, out_size=(64, 48))
    assert len(reference) < len(packets) - 4
    assert frames == reference
    assert indices == list(range(len(reference)))


def test_decode_actor_runs_without_ray(sample_clips: dict) -> None:
    """The decode actor's work runs outside Ray (stages testable without Ray): its rows come out, the end marker's
    node id is empty, and no local Ray instance is started on the way (asking Ray for its runtime context
    outside Ray would start one). In a fresh interpreter, since this test session may hold a Ray instance."""
    import subprocess
    import sys
    import textwrap

    path = sample_clips["h264_mp4"][0]
    code = textwrap.dedent(f"""
        import ray
        from anonray.config import Config
        from anonray.ingest.probe import probe
        from anonray.runtime.actors import SegmentDecoder
        info, segments = probe({str(path)!r}, "clip.mp4", target_seconds=0.5)
        decoder = SegmentDecoder(Config().canonical_json())
        frames, markers = 0, []
        for segment in segments:
            for rows in decoder._decode(info, segment):
                frames += int((rows.frame_index >= 0).sum())
                markers += [str(n) for i, n in zip(rows.frame_index, rows.decode_node_id) if i < 0]
        print("FRAMES", frames, info.frame_count, "MARKERS", len(markers), len(segments), repr(set(markers)),
              "RAY", ray.is_initialized())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = proc.stdout.split()
    at = words.index("FRAMES")
    assert words[at + 1] == words[at + 2] != "0", proc.stdout
    assert words[at + 4] == words[at + 5], proc.stdout
    assert words[at + 6] == "{''}" and words[at + 8] == "False", proc.stdout
