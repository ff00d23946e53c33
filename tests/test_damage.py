"""Damaged video data under ``input.on_damage``: fail the file (default) or mask unanalysed frames whole.

Unit level (no Ray): ``render_video`` on a clean clip with frames marked as not analysed (frame_pts -1
in a segment with a damage error), and on the damaged file of test_broken_inputs (frames the render
decode cannot produce are lost). Then one run through ``anonray.runtime.driver.run`` with the damaged file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _video_checks import analysed_video, decode_frames, mask_pixels
from test_broken_inputs import make_broken_files

from anonray.config import Config
from anonray.decode.segment import DecodeError, decode_segment
from anonray.handoff import VideoDetections
from anonray.ingest.probe import probe
from anonray.records.rows import RunContext, ok_video_row, utc_now
from anonray.records.tables import to_table
from anonray.render.codec.transcoder import EncodeError
from anonray.render.video import FLAG_DAMAGED_FRAMES, RenderError, render_video
from anonray.runtime.driver import RunRequest, run
from anonray.testing.samples import write_sample_video
from anonray.track.collect import DetectionCollector

MASK_WHOLE = {"mask.color": "ff00ff", "input.on_damage": "mask_whole_frame"}
LOST = range(5, 9)


def _mask_whole_config(**overrides) -> Config:
    """Without the bitrate cap: where it binds, the encoder codes a frame filled whole at a coarser quantizer
    (measured: 4 of 110,592 pixels more than 12 levels off the colour), which the exact checks here would take
    for a fill that failed."""
    return Config().with_overrides(**{**MASK_WHOLE, "encoder.max_bitrate_ratio": None, **overrides})


def _with_unanalysed_frames(src: Path) -> VideoDetections:
    """A clean clip as detection would hand it over had frames 5..8 been lost to damaged data."""
    video = analysed_video(src, "clip.mp4")
    video.frame_pts[list(LOST)] = -1
    first = video.segments[0]
    first.frames_decoded -= len(LOST)
    first.frames_received -= len(LOST)
    first.error_class, first.error_message = "missing_frames", f"segment 0: {len(LOST)} frames could not be decoded"
    return video


@pytest.fixture
def clip(tmp_path) -> Path:
    src = tmp_path / "in" / "clip.mp4"
    src.parent.mkdir()
    write_sample_video(src, format="h264_mp4", frames=25, audio=False)
    return src


def test_the_default_fails_damaged_data(clip, tmp_path):
    assert Config().input.on_damage == "fail"
    video = _with_unanalysed_frames(clip)
    assert video.failure() == video.error and video.failure().error_class == "damaged_frames"
    assert video.failure("mask_whole_frame") is None
    out = tmp_path / "out"
    with pytest.raises((RenderError, EncodeError)):  # render itself refuses an unanalysed frame too
        render_video(video, Config(), out, out / "_anonray")
    assert not (out / "clip.mp4").exists()


def test_other_failures_still_fail_with_mask_whole_frame(clip):
    video = _with_unanalysed_frames(clip)
    video.segments[-1].error_class, video.segments[-1].error_message = "non_monotonic", "out of order"
    assert video.failure("mask_whole_frame").error_class == "non_monotonic"


def test_on_damage_is_part_of_the_config_hash():
    assert _mask_whole_config().config_hash() != Config().with_overrides(**{"mask.color": "ff00ff"}).config_hash()


@pytest.mark.parametrize("style", ["blur", "solid"])
def test_unanalysed_frames_are_masked_whole(clip, tmp_path, style):
    video = _with_unanalysed_frames(clip)
    out = tmp_path / "out"
    result = render_video(video, _mask_whole_config(**{"mask.style": style}), out, out / "_anonray")
    assert (result.frames_out, result.frames_masked_whole, result.frames_lost) == (25, len(LOST), 0)
    assert FLAG_DAMAGED_FRAMES in result.qa_flags
    _, images, _, _ = decode_frames(out / result.output_path)
    assert len(images) == 25
    for i, image in enumerate(images):
        share = mask_pixels(image, tolerance=12).mean()
        if i in LOST:
            assert share == 1.0, (i, share)
        else:
            assert share < 0.5, (i, share)
    ctx = RunContext("run", _mask_whole_config(), {})
    row = ok_video_row(ctx, video, result, started=utc_now(), seconds_ingest=0.0)
    assert (row["status"], row["frames_masked_whole"], row["frames_lost"]) == ("ok", len(LOST), 0)
    to_table("videos", [row])  # the schema has the columns


def _detected(path: Path, rel: str) -> VideoDetections:
    """A video as detection hands it over, decoded for real (damaged segments end with their error)."""
    info, segments = probe(path, rel)
    video = DetectionCollector([(info, segments)]).drain_incomplete()[0]
    for segment, stats in zip(segments, video.segments, strict=True):
        stats.ended, stats.error_class, stats.error_message = True, "", ""
        try:
            for index, pts, _ in decode_segment(path, info, segment, (96, 72)):
                video.frame_pts[index] = pts
                stats.frames_decoded += 1
                stats.frames_received += 1
        except DecodeError as err:
            stats.error_class, stats.error_message = err.error_class, err.message
    return video


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damage")
    make_broken_files(root / "in", root / "scratch")
    return root / "in" / "damaged.mp4"


def test_the_damaged_file_is_written_without_its_lost_frames(damaged, tmp_path):
    video = _detected(damaged, "damaged.mp4")
    assert video.failure().error_class == "damaged_frames" and video.failure("mask_whole_frame") is None
    out = tmp_path / "out"
    result = render_video(video, _mask_whole_config(), out, out / "_anonray")
    frames = video.info.frame_count
    assert result.frames_lost + result.frames_out == frames and 0 < result.frames_out < frames
    assert FLAG_DAMAGED_FRAMES in result.qa_flags
    times, images, _, _ = decode_frames(out / result.output_path)
    assert len(images) == result.frames_out
    analysed = {int(p) * video.info.time_base_fraction for p in video.frame_pts if p >= 0}
    whole = [i for i, t in enumerate(times) if t not in analysed]
    assert len(whole) == result.frames_masked_whole
    for i, image in enumerate(images):
        share = mask_pixels(image, tolerance=12).mean()
        assert (share == 1.0) if i in whole else (share < 0.5), (i, share)


@pytest.mark.slow
def test_pipeline_writes_a_damaged_file_with_mask_whole_frame(ray_session, damaged, tmp_path):
    out = tmp_path / "out"
    summary = run(RunRequest([str(damaged)], out, _mask_whole_config()))
    assert (summary.exit_code, summary.ok, summary.failed) == (0, 1, 0)
    row = pq.read_table(out / "_anonray" / "videos").to_pandas().iloc[0]
    assert row.status == "ok" and not isinstance(row.error_class, str)  # null (NaN in pandas)
    assert row.frames_lost > 0 and row.frames_out + row.frames_lost == row.frames_in
    assert FLAG_DAMAGED_FRAMES in list(row.qa_flags)
    _, images, _, _ = decode_frames(out / "damaged.mp4")
    assert len(images) == row.frames_out
    assert sum(mask_pixels(im, tolerance=12).mean() == 1.0 for im in images) == row.frames_masked_whole
    segments = pq.read_table(out / "_anonray" / "segments").to_pandas()
    assert "missing_frames" in set(segments.error_class)
    assert np.all(segments.frames_decoded <= segments.frames_expected)
