"""QA of rendered outputs (anonray/qa/checks.py): checks against the input, mask statistics, anomaly flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from _video_checks import analysed_video

import anonray.qa.checks
from anonray.config import Config
from anonray.qa.checks import (
    FLAG_DETECTIONS_DROPOUT,
    FLAG_TRACKS_VANISH,
    anomaly_flags,
    detections_dropout,
    inspect_output,
    mask_statistics,
    output_problems,
    tracks_vanish,
)
from anonray.render.codec.transcoder import transcode
from anonray.render.video import RenderError, render_video
from anonray.testing.samples import SAMPLE_FORMATS, write_sample_video
from anonray.types import MaskPlan


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("qa_clips")
    paths = {}
    for seed, name in enumerate(SAMPLE_FORMATS):
        paths[name] = folder / f"{name}.{SAMPLE_FORMATS[name].extension}"
        write_sample_video(paths[name], format=name, frames=20, seed=seed)
    return paths


@pytest.mark.parametrize("name", sorted(SAMPLE_FORMATS))
def test_every_sample_format_passes_qa_when_rendered(clips, tmp_path, name):
    video = analysed_video(clips[name], f"{name}{clips[name].suffix}")
    result = render_video(video, Config(), tmp_path / "out", tmp_path / "out" / "_anonray")
    assert result.frames_out == 20 and result.seconds_qa > 0
    assert result.qa_flags == () and result.mask_statistics.share_frames_masked == 0.0


@pytest.fixture(scope="module")
def rendered(clips, tmp_path_factory):
    """The H.264 clip (AAC audio) transcoded without masks: (video, output path)."""
    video = analysed_video(clips["h264_mp4"], "clip.mp4")
    out = tmp_path_factory.mktemp("qa_out") / "clip.mp4"
    transcode(clips["h264_mp4"], out, video.info, Config())
    return video, out


def test_matching_output_has_no_problems(rendered):
    video, out = rendered
    read = inspect_output(out)
    assert read.frames_decoded == 20 and not read.decode_error
    assert output_problems(read, video.info, video.frame_pts, "keep") == []


def test_truncated_output_is_not_decodable_to_the_end(rendered, tmp_path):
    video, out = rendered
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size * 2 // 3])
    problems = output_problems(inspect_output(cut), video.info, video.frame_pts, "keep")
    assert any("could not be decoded" in p or "frames" in p for p in problems)


def test_each_difference_is_named(rendered):
    video, out = rendered
    read = inspect_output(out)
    info = video.info
    shifted = video.frame_pts.copy()
    shifted[5:] += 1000  # input time base 1/12800 here: far beyond 1 ms
    assert any("timestamps differ" in p for p in output_problems(read, info, shifted, "keep"))
    other = dataclasses.replace(info, width=info.width + 2, rotation=90, frame_count=21)
    problems = " | ".join(output_problems(read, other, video.frame_pts, "keep"))
    assert "21" in problems and "pixels" in problems and "rotated" in problems
    assert any("audio streams" in p for p in output_problems(read, info, video.frame_pts, "drop"))
    longer = dataclasses.replace(info, audio=(dataclasses.replace(info.audio[0], duration_seconds=5.0),))
    assert any("audio stream 0" in p for p in output_problems(read, longer, video.frame_pts, "keep"))


def test_render_fails_qa_and_publishes_nothing(clips, tmp_path, monkeypatch):
    video = analysed_video(clips["h264_mp4"], "clip.mp4")
    real = anonray.qa.checks.inspect_output

    def one_frame_short(path, luma_at=()):
        read = real(path, luma_at)
        read.frames_decoded -= 1
        return read

    monkeypatch.setattr(anonray.qa.checks, "inspect_output", one_frame_short)
    out = tmp_path / "out"
    with pytest.raises(RenderError) as caught:
        render_video(video, Config(), out, out / "_anonray", run_id="r1")
    assert caught.value.error_class == "qa_failed"
    assert "19 frames" in str(caught.value) and "not published" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
    assert not (out / "clip.mp4").exists() and not list((out / "_anonray" / "tmp").iterdir())
    assert not (out / "_anonray" / "regions").exists()


def _plan(frames: int, rows: list[tuple[int, int]]) -> MaskPlan:
    """A plan with one region per (frame, class id) row."""
    idx = np.array([r[0] for r in rows], np.int64)
    return MaskPlan(frames, idx, np.zeros((len(rows), 4), np.float32), np.array([r[1] for r in rows], np.int64),
                    np.zeros(len(rows), np.int64), np.arange(len(rows), dtype=np.int64))


def test_mask_statistics():
    plan = _plan(10, [(0, 0), (0, 0), (0, 1), (3, 0), (9, 1)])
    stats = mask_statistics(plan)
    assert stats.share_frames_masked == pytest.approx(0.3)
    assert stats.regions_per_frame_mean == {"face": pytest.approx(0.3), "plate": pytest.approx(0.2)}
    assert stats.regions_per_frame_max == {"face": 2, "plate": 1}
    empty = mask_statistics(MaskPlan(0))
    assert empty.share_frames_masked == 0.0 and empty.regions_per_frame_max == {"face": 0, "plate": 0}


def test_tracks_vanish():
    crowd = np.array([4] * 30 + [0] * 30 + [1] * 10)
    assert tracks_vanish(crowd, np.zeros(0, np.int64), min_frames=25)
    assert not tracks_vanish(crowd, np.array([30]), min_frames=25)  # a scene cut explains it
    assert not tracks_vanish(crowd, np.zeros(0, np.int64), min_frames=40)  # back within the run
    fading = np.array([4] * 30 + [2] * 3 + [0] * 30)
    assert not tracks_vanish(fading, np.zeros(0, np.int64), min_frames=25)  # not abrupt
    assert not tracks_vanish(np.array([2] * 30 + [0] * 30), np.zeros(0, np.int64), min_frames=25)  # few
    assert tracks_vanish(np.array([3] * 30 + [0] * 25), np.zeros(0, np.int64), min_frames=25)  # to the end


def test_detections_dropout():
    frames = [50, 50, 50]
    assert detections_dropout([100, 0, 80], frames)
    assert not detections_dropout([100, 0, 10], frames)  # one neighbour had few
    assert not detections_dropout([0, 0, 0], frames)
    assert detections_dropout([0, 60], [50, 50])  # at the edge, its one neighbour
    assert not detections_dropout([100, 3, 80], frames)


def test_anomaly_flags():
    rows = [(f, 0) for f in range(30) for _ in range(3)]
    plan = _plan(100, rows)
    flags = anomaly_flags(plan, np.zeros(0, np.int64), 25.0, [90, 0], [50, 50])
    assert flags == sorted([FLAG_TRACKS_VANISH, FLAG_DETECTIONS_DROPOUT])
    assert anomaly_flags(plan, np.array([30]), 25.0, [90, 10], [50, 50]) == []
