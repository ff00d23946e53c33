"""The review sheet and the regions table, without Ray: sampling, frame reading, outlines, the page.

A real clip is rendered with ``render_video`` (solid magenta masks from planted detections), so the
sheet is judged on a real anonymized output: its pictures must be that output's frames (magenta where
the face was), the right size, with the regions outlined.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from _video_checks import analysed_video, mask_pixels, solid_config

from anonray.config import Config, ReviewConfig
from anonray.decode.orientation import display_size
from anonray.handoff import VideoDetections
from anonray.records.regions import delete_run_regions, read_regions, regions_file, write_regions
from anonray.records.review import (
    OUTLINE_BGR,
    at_keyframes,
    build_review_sheet,
    draw_regions,
    frame_indices,
    read_output_frames,
    review_frames,
    sample_outputs,
    sample_size,
    seek_and_decode,
)
from anonray.records.tables import read_table
from anonray.render.video import render_video
from anonray.testing.samples import SampleTruth, write_sample_video
from anonray.types import SHAPE_BOX, SHAPE_ELLIPSE, Detections, MaskPlan

RUN_ID = "20250101T000000Z-abc123"


# ---------------------------------------------------------------- sampling

@pytest.mark.parametrize(("ok", "share", "min_files", "expected"), [
    (0, 0.01, 1, 0), (1, 0.01, 1, 1), (50, 0.01, 1, 1), (250, 0.01, 1, 3), (10, 0.5, 1, 5), (3, 0.0, 5, 3),
    (100, 0.0, 0, 0), (101, 0.01, 0, 2),
])
def test_sample_size(ok, share, min_files, expected):
    assert sample_size(ok, share, min_files) == expected


def _rows(n: int, status: str = "ok") -> list[dict]:
    return [{"video_id": f"{i:012x}", "output_path": f"cam/{i:03d}.mp4", "status": status} for i in range(n)]


def test_sample_is_fixed_by_the_seed_and_ignores_row_order():
    rows = _rows(300) + _rows(5, "failed")
    cfg = ReviewConfig()
    first = [r["video_id"] for r in sample_outputs(rows, cfg)]
    assert len(first) == 3  # ceil(1% of 300); failed rows are never candidates
    shuffled = [rows[i] for i in np.random.default_rng(7).permutation(len(rows))]
    assert [r["video_id"] for r in sample_outputs(shuffled, cfg)] == first
    other = [r["video_id"] for r in sample_outputs(rows, cfg.model_copy(update={"seed": 1}))]
    assert other != first
    assert sample_outputs(_rows(4, "failed"), cfg) == []
    everything = sample_outputs(rows, cfg.model_copy(update={"sample_share": 1.0}))
    assert [r["output_path"] for r in everything] == sorted(r["output_path"] for r in rows[:300])


@pytest.mark.parametrize(("frames", "per_file", "expected"), [
    (25, 3, [4, 12, 20]), (50, 1, [25]), (2, 3, [0, 1]), (1, 3, [0]), (0, 3, []), (10, 10, list(range(10))),
])
def test_frame_indices_are_evenly_spread(frames, per_file, expected):
    assert frame_indices(frames, per_file) == expected


def test_review_config_defaults_and_limits():
    cfg = Config().review
    assert (cfg.sample_share, cfg.min_files, cfg.frames_per_file, cfg.seed, cfg.keep_regions) == (0.01, 1, 3, 0, True)
    with pytest.raises(ValueError, match="review.frames_per_file"):
        Config().with_overrides(**{"review.frames_per_file": 0})


# ---------------------------------------------------------------- reading frames of an output

def _key_indices(path: Path) -> list[int]:
    """Presentation indices of a file's keyframes, from its packets."""
    with av.open(str(path)) as c:
        packets = sorted((p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size)
    return [i for i, (_, key) in enumerate(packets) if key]


@pytest.mark.parametrize(("indices", "count", "keys", "expected"), [
    ([4, 12, 20], 25, [0], [0, 9, 17]),  # only the first slice [0, 8.3) holds a keyframe: the others' first frames
    ([83, 250, 416], 500, [0, 210, 420], [0, 210, 420]),  # the nearest keyframe inside each slice
    ([83, 250, 416], 500, [0, 250], [0, 250, 334]),  # a chunked 20 s output: 84 decodes for the last, not 167
    ([83, 250, 416], 500, [0, 150, 420], [150, 167, 420]),  # the nearer of two in the first, none in the middle
    ([5, 15], 20, list(range(20)), [5, 15]),  # every frame a keyframe (MJPEG): the centres themselves
    ([2, 7], 10, [], [2, 7]),  # no keyframe known: unchanged
    ([10, 30], 40, [19, 21], [19, 21]),  # ties and slice edges: each slice keeps its own keyframe
])
def test_review_frames_move_to_a_keyframe_in_their_own_slice(indices, count, keys, expected):
    assert at_keyframes(indices, count, keys) == expected


def test_review_frames_are_decoded_from_keyframes_only(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    write_sample_video(path, format="h264_mp4", frames=60, audio=False)
    keys = _key_indices(path)
    import anonray.records.review as review

    monkeypatch.setattr(review, "read_sequentially", lambda *a: pytest.fail("decoded from the start"))
    got = review_frames(path, 3, 60)
    reference = _all_frames(path)
    assert sorted(got) == at_keyframes(frame_indices(60, 3), 60, keys)
    assert all(np.array_equal(got[i].image, reference[i]) for i in got)


@pytest.mark.parametrize("fmt", ["h264_mp4", "hevc_mkv"])
def test_a_keyframe_is_decoded_alone(tmp_path, fmt):
    """Seeking to a keyframe whose decode timestamp precedes its pts (B-frames) lands on it, not on the
    keyframe before it: one frame decoded, the same pixels as a decode from the start."""
    path = tmp_path / f"clip.{'mkv' if fmt == 'hevc_mkv' else 'mp4'}"
    write_sample_video(path, format=fmt, frames=60, audio=False)
    reference = _all_frames(path)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        packets = [p for p in c.demux(stream) if p.size]
        order = sorted(p.pts for p in packets)
        keyframes = [(p.pts, p.pts if p.dts is None else min(p.pts, p.dts)) for p in packets if p.is_keyframe]
        assert len(keyframes) >= 3
        assert all(seek < pts for pts, seek in keyframes[1:])  # the case that cost a GOP per frame
        for keyframe in keyframes[1:]:
            frame, decoded = seek_and_decode(c, stream, keyframe, keyframe[0])
            assert decoded == 1
            assert np.array_equal(frame.to_ndarray(format="bgr24"), reference[order.index(keyframe[0])])
        # a frame after the keyframe: decoded from it, no further back
        pts, seek = keyframes[1]
        target = order[order.index(pts) + 3]
        frame, decoded = seek_and_decode(c, stream, (pts, seek), target)
        assert frame.pts == target and np.array_equal(frame.to_ndarray(format="bgr24"), reference[order.index(target)])
        assert decoded <= order.index(target) - order.index(pts) + 1 + 4  # reorder delay, not a GOP


def _all_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(c.streams.video[0])]


@pytest.mark.parametrize("fmt", ["h264_mp4", "hevc_mkv", "mpeg2_ts", "vfr_mp4"])
def test_read_output_frames_gives_exactly_the_frames_at_those_indices(tmp_path, fmt, monkeypatch):
    path = tmp_path / f"clip.{'mkv' if fmt == 'hevc_mkv' else 'ts' if fmt == 'mpeg2_ts' else 'mp4'}"
    write_sample_video(path, format=fmt, frames=40, audio=False)
    reference = _all_frames(path)
    wanted = [0, 13, 14, 15, 16, 29, 39]
    got = read_output_frames(path, wanted)
    assert sorted(got) == wanted
    for i in wanted:
        assert got[i].index == i
        assert np.array_equal(got[i].image, reference[i]), f"frame {i} differs"
    if fmt == "h264_mp4":  # closed GOPs with B-frames in MP4: a late frame is found by seeking, not from the start
        import anonray.records.review as review

        monkeypatch.setattr(review, "read_sequentially", lambda *a: pytest.fail("decoded from the start"))
        again = read_output_frames(path, [38, 39])
        assert all(np.array_equal(again[i].image, reference[i]) for i in (38, 39))


# ---------------------------------------------------------------- drawing

def test_draw_regions_outlines_boxes_and_ellipses_in_their_class_colour():
    image = np.full((120, 160, 3), 128, np.uint8)
    boxes = np.array([[20, 20, 60, 80], [90, 30, 150, 60]], np.float32)
    out = draw_regions(image, boxes, np.array([SHAPE_ELLIPSE, SHAPE_BOX]), np.array([0, 1]))
    assert np.array_equal(image, np.full((120, 160, 3), 128, np.uint8))  # the input is not drawn on
    face, plate = np.array(OUTLINE_BGR["face"]), np.array(OUTLINE_BGR["plate"])
    assert (out[50, 20] == face).all() or (out[50, 21] == face).all()  # the ellipse's left edge
    assert (out[30, 120] == plate).all()  # the box's top edge
    assert (out[50, 40] == 128).all() and (out[45, 120] == 128).all()  # insides untouched
    assert (out[5, 5] == 128).all()


# ---------------------------------------------------------------- a real render, its regions, the sheet

def _analysed(path: Path, rel: str, truth: SampleTruth) -> VideoDetections:
    """A video as detection hands it to render, with the planted face and plate as detections."""
    video = analysed_video(path, rel)
    n = truth.frame_count
    video.detections = Detections(
        frame_index=np.concatenate([np.arange(n), np.arange(n)]).astype(np.int64),
        xyxy=np.concatenate([truth.face_boxes, truth.plate_boxes]).astype(np.float32),
        score=np.full(2 * n, 0.9, np.float32),
        cls=np.concatenate([np.zeros(n), np.ones(n)]).astype(np.int64),
    )
    return video


def _rendered(tmp_path: Path, fmt: str) -> tuple[dict, Path, Path, SampleTruth]:
    src = tmp_path / "in" / "site_a" / "clip_0815.mp4"
    src.parent.mkdir(parents=True)
    truth = write_sample_video(src, format=fmt, frames=25, audio=False)
    video = _analysed(src, "site_a/clip_0815.mp4", truth)
    out, state = tmp_path / "out", tmp_path / "out" / "_anonray"
    result = render_video(video, solid_config(), out, state, RUN_ID)
    row = {"video_id": video.info.video_id, "output_path": result.output_path, "status": "ok",
           "frames_out": result.frames_out, "width": video.info.width, "height": video.info.height,
           "rotation": video.info.rotation, "sha256_out": result.sha256_out, "frames_masked": result.frames_masked}
    return row, out, state, truth


def _images(page: str) -> list[np.ndarray]:
    uris = re.findall(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)
    images = [cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_COLOR) for u in uris]
    assert all(img is not None for img in images)
    return images


def test_render_writes_the_regions_of_every_masked_frame(tmp_path):
    row, out, state, truth = _rendered(tmp_path, "h264_mp4")
    part = regions_file(state, RUN_ID, row["video_id"])
    assert part.is_file() and part.parent == state / "regions"
    table = pq.read_table(part).to_pandas()
    assert set(table.run_id) == {RUN_ID} and set(table.video_id) == {row["video_id"]}
    assert table.frame_index.nunique() == row["frames_masked"] == truth.frame_count
    assert set(table.class_name) == {"face", "plate"}
    assert set(table[table.class_name == "face"]["shape"]) == {"ellipse"}
    assert set(table[table.class_name == "plate"]["shape"]) == {"box"}
    # every planted face lies inside its frame's (enlarged) face region
    faces = table[table.class_name == "face"].set_index("frame_index")
    for i in range(truth.frame_count):
        x0, y0, x1, y1 = truth.face_boxes[i]
        region = faces.loc[i]
        assert region.x0 <= x0 and region.y0 <= y0 and region.x1 >= x1 and region.y1 >= y1
    assert len(read_table(state, "regions")) == len(table)
    plan = read_regions(state, RUN_ID, row["video_id"], row["frames_out"])
    assert len(plan) == len(table) and plan.frames_masked() == truth.frame_count


@pytest.mark.parametrize("fmt", ["h264_mp4", "rotated_mp4"])
def test_sheet_shows_output_frames_with_outlines(tmp_path, fmt):
    row, out, state, truth = _rendered(tmp_path, fmt)
    cfg = ReviewConfig(frames_per_file=3)
    page, summary = build_review_sheet(RUN_ID, [row, {"video_id": "f" * 12, "status": "failed"}], out, state, cfg,
                                       {row["video_id"]: 0}, "cafe")
    assert summary["files_sampled"] == 1 and summary["frames_shown"] == 3 and summary["ok_outputs"] == 1
    images = _images(page)
    assert len(images) == 3 == page.count("<img ")
    w, h = display_size(row["width"], row["height"], row["rotation"])
    assert all(img.shape == (h, w, 3) for img in images)
    shown = [int(x) for x in re.findall(r"<figcaption>frame (\d+)", page)]
    keys = _key_indices(out / row["output_path"])
    assert shown == at_keyframes(frame_indices(25, 3), 25, keys) and len(shown) == 3
    assert shown[0] == 0 and 0 in keys  # the first slice holds the output's first keyframe: taken instead of 4
    face_colour = np.array(OUTLINE_BGR["face"])
    for k, img in zip(shown, images, strict=True):
        assert (np.abs(img.astype(int) - face_colour).max(axis=2) <= 60).sum() > 30, "no face outline"
        if fmt == "h264_mp4":  # the middle of the face is the output's magenta mask, not the source's face
            x0, y0, x1, y1 = truth.face_boxes[k]
            core = img[(y0 + y1) // 2 - 5:(y0 + y1) // 2 + 5, (x0 + x1) // 2 - 5:(x0 + x1) // 2 + 5, ::-1]
            assert mask_pixels(core).mean() > 0.9
    assert row["output_path"] in page and "manifest file #0" in page
    assert str(tmp_path) not in page and row["output_path"] == "site_a/clip_0815.mp4"


def test_sheet_without_regions_still_shows_frames_and_says_so(tmp_path):
    row, out, state, _ = _rendered(tmp_path, "h264_mp4")
    assert delete_run_regions(state, RUN_ID) == 1 and delete_run_regions(state, RUN_ID) == 0
    page, summary = build_review_sheet(RUN_ID, [row], out, state, ReviewConfig(frames_per_file=2))
    assert summary["frames_shown"] == 2 and len(_images(page)) == 2
    assert "no regions kept" in page


def test_sheet_with_an_unreadable_output_reports_it(tmp_path):
    row, out, state, _ = _rendered(tmp_path, "h264_mp4")
    (out / row["output_path"]).write_bytes(b"\0" * 100)
    page, summary = build_review_sheet(RUN_ID, [row], out, state, ReviewConfig())
    assert summary["files_unreadable"] == 1 and summary["frames_shown"] == 0
    assert "could not be read" in page and "<img " not in page


def test_sheet_scales_large_frames_down(tmp_path):
    row, out, state, _ = _rendered(tmp_path, "h264_mp4")
    page, _ = build_review_sheet(RUN_ID, [row], out, state, ReviewConfig(max_side=192, frames_per_file=1))
    (img,) = _images(page)
    assert img.shape == (144, 192, 3)  # 384x288 scaled to a long side of 192


def test_regions_of_an_empty_plan_are_an_empty_part(tmp_path):
    write_regions(tmp_path, RUN_ID, "0" * 12, MaskPlan(frame_count=10))
    plan = read_regions(tmp_path, RUN_ID, "0" * 12, 10)
    assert plan is not None and len(plan) == 0
    assert read_regions(tmp_path, RUN_ID, "1" * 12, 10) is None
