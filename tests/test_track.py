"""Tracking, gap filling and mask planning on synthetic detections (no video, no Ray)."""

import numpy as np

from anonray.config import Config
from anonray.render.mask import enlarge_boxes
from anonray.track.tracker import (
    associate,
    confirm_threshold,
    frames_to_leave,
    grow_boxes,
    iou_matrix,
    plan_masks,
    track_class,
)
from anonray.types import SHAPE_BOX, SHAPE_ELLIPSE, Detections


def _dets(rows: list[tuple[int, float, float, float, float, int]]) -> Detections:
    arr = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(
        frame_index=arr[:, 0].astype(np.int64),
        xyxy=arr[:, 1:5].astype(np.float32),
        score=np.full(len(arr), 0.9, np.float32),
        cls=arr[:, 5].astype(np.int64),
    )


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b)[0], [1.0, 50 / 150, 0.0], rtol=1e-6)


def test_associate_refuses_low_iou_and_solves_crossing():
    tracks = np.array([[0, 0, 10, 10], [100, 0, 110, 10]], np.float32)
    dets = np.array([[101, 0, 111, 10], [1, 0, 11, 10], [300, 300, 310, 310]], np.float32)
    assert sorted(associate(tracks, dets, 0.2)) == [(0, 1), (1, 0)]


def test_two_objects_moving_give_two_tracks_with_gaps_filled():
    rows = []
    for f in range(30):
        if f in (10, 11, 12):  # detector misses three frames of object A
            pass
        else:
            rows.append((f, 10 + f, 10, 50 + f, 50, 0))
        rows.append((f, 200 - f, 100, 240 - f, 140, 0))
    tracks = track_class(_dets(rows), 0, Config().tracking.face)
    assert len(tracks) == 2
    config = Config()
    plan, summary = plan_masks(_dets(rows), 30, 640, 360, config)
    assert summary.tracks["face"] == 2
    by_frame = plan.regions_by_frame()
    # every frame has both regions, including the three missed frames (interpolated)
    assert all(len(by_frame[f]) == 2 for f in range(30))
    missed = by_frame[11]
    xs = sorted(plan.xyxy[missed][:, 0])
    # object A at frame 11 would be at x1=21; the region (enlarged by 1.3) must cover it
    assert any(x <= 21 for x in xs)


def test_pre_and_post_roll_and_clip_to_video():
    rows = [(f, 100, 100, 140, 140, 1) for f in range(5, 8)]
    config = Config()
    plan, _ = plan_masks(_dets(rows), 10, 640, 360, config)
    frames = sorted(set(plan.frame_index.tolist()))
    roll = config.tracking.plate
    assert frames[0] == 5 - roll.pre_roll
    assert frames[-1] == min(9, 7 + roll.post_roll)
    assert set(plan.shape.tolist()) == {SHAPE_BOX}


def test_faces_are_ellipses_with_margin():
    rows = [(0, 100, 100, 200, 200, 0)]
    plan, _ = plan_masks(_dets(rows), 1, 640, 360, Config().with_overrides(**{"mask.face_margin": 1.3}))
    assert plan.shape[0] == SHAPE_ELLIPSE
    np.testing.assert_allclose(plan.xyxy[0], [85, 85, 215, 215], atol=1e-3)
    plan, _ = plan_masks(_dets(rows), 1, 640, 360, Config())  # default: 3% past the detector's box
    np.testing.assert_allclose(plan.xyxy[0], [98.5, 98.5, 201.5, 201.5], atol=1e-3)


def test_disabled_class_is_not_planned():
    rows = [(0, 100, 100, 200, 200, 1)]
    plan, summary = plan_masks(_dets(rows), 1, 640, 360, Config(classes=["face"]))
    assert len(plan) == 0 and "plate" not in summary.tracks


def test_enlarge_boxes_clips_to_frame():
    out = enlarge_boxes(np.array([[0, 0, 100, 50]], np.float32), 2.0, 120, 60)
    np.testing.assert_allclose(out[0], [0, 0, 120, 60])


def test_track_breaks_after_max_gap():
    params = Config().tracking.face
    rows = [(0, 10, 10, 50, 50, 0), (params.max_gap + 5, 10, 10, 50, 50, 0)]
    assert len(track_class(_dets(rows), 0, params)) == 2


def test_weak_detections_continue_but_never_start_tracks():
    params = Config().tracking.face.model_copy(update={"track_threshold": 0.5})
    rows = [(f, 10 + f, 10, 50 + f, 50, 0) for f in range(10)]
    dets = _dets(rows)
    dets.score[3:] = 0.2  # the object fades to weak scores after three frames
    dets = Detections.concat([dets, _dets([(5, 300, 300, 340, 340, 0)])])  # a lone weak false positive
    dets.score[-1] = 0.2
    tracks = track_class(dets, 0, params)
    assert len(tracks) == 1 and len(tracks[0].frames) == 10


def test_weak_tracks_count_only_once_they_last_and_then_from_their_first_frame():
    params = Config().tracking.face.model_copy(update={"track_threshold": 0.5, "weak_track_hits": 6})
    lasting = _dets([(f, 10 + f, 10, 30 + f, 34, 0) for f in range(8)])  # a small, weakly scored face
    brief = _dets([(f, 300, 300, 320, 324, 0) for f in range(4)])  # a weak blip: too short
    dets = Detections.concat([lasting, brief])
    dets.score[:] = 0.07  # below the small-face threshold (0.1)
    tracks = track_class(dets, 0, params)
    assert len(tracks) == 1 and tracks[0].frames == list(range(8))
    off = params.model_copy(update={"weak_track_hits": 0})
    assert track_class(dets, 0, off) == []


def test_a_low_scored_track_needs_low_score_min_hits_detections_and_a_strong_one_does_not():
    """Issue 14: a small face confirmed at a low score (under track_threshold) is masked only once it has
    lasted ``low_score_min_hits`` detections; a brief track that reached track_threshold is never dropped."""
    params = Config().tracking.face.model_copy(update={"low_score_min_hits": 5, "alone_track_threshold": None})
    lasting = _dets([(f, 10, 10, 30, 30, 0) for f in range(6)])  # 20 px: confirmed from 0.1
    blip = _dets([(f, 300, 300, 320, 320, 0) for f in range(3)])
    strong_blip = _dets([(f, 600, 300, 620, 320, 0) for f in range(2)])
    dets = Detections.concat([lasting, blip, strong_blip])
    dets.score[:9] = 0.2  # over the small-face threshold, under track_threshold (0.4)
    tracks = track_class(dets, 0, params)
    assert sorted(t.frames for t in tracks) == [[0, 1], list(range(6))]
    assert {float(t.boxes[0][0]) for t in tracks} == {10.0, 600.0}
    every = params.model_copy(update={"low_score_min_hits": 1})
    assert len(track_class(dets, 0, every)) == 3


def test_a_face_first_seen_weak_is_masked_from_its_first_frame_once_it_is_seen_strong():
    """Issue 14: weak detections start tentative tracks; one strong detection later confirms the whole
    track (the plan is made before rendering), so the weak early frames are masked too."""
    params = Config().tracking.face
    dets = _dets([(f, 10 + 2 * f, 10, 90 + 2 * f, 90, 0) for f in range(12)])  # 80 px: track_threshold applies
    dets.score[:8] = 0.15  # far off and weak at first
    dets.score[8:] = 0.9
    tracks = track_class(dets, 0, params)
    assert len(tracks) == 1 and tracks[0].frames == list(range(12))
    never_strong = _dets([(f, 10 + 2 * f, 10, 90 + 2 * f, 90, 0) for f in range(12)])
    never_strong.score[:] = 0.35  # below 0.4 at this size: a false face on texture scores like this
    assert track_class(never_strong, 0, params) == []


def test_a_tentative_track_never_takes_the_detections_of_a_confirmed_one():
    """A face seen strong, then weakly and a little off for one frame (a tentative track is born there), then
    weakly where it was: the confirmed track keeps the face and it stays masked on every frame (it was masked
    on 7 of 60 when tentative tracks matched on equal terms)."""
    rows = [(f, 100, 100, 180, 180, 0) for f in (0, 1)] + [(3, 150, 100, 230, 180, 0)]
    rows += [(f, 130, 100, 210, 180, 0) for f in range(4, 60)]
    dets = _dets(rows)
    dets.score[2:] = 0.3
    plan, _ = plan_masks(dets, 60, 640, 360, Config())
    assert set(plan.frame_index.tolist()) == set(range(60))


def test_track_threshold_zero_confirms_every_detection_whatever_the_small_setting():
    params = Config().tracking.face.model_copy(update={"track_threshold": 0.0})
    np.testing.assert_allclose(confirm_threshold(np.array([10, 40, 100], np.float32), params), 0.0)
    dets = _dets([(0, 10, 10, 30, 30, 0)])
    dets.score[:] = 0.07
    assert len(track_class(dets, 0, params)) == 1


def test_small_tracks_are_confirmed_at_a_lower_score_ramping_with_height():
    params = Config().tracking.face  # 0.1 up to 24 px, 0.4 from 40 px (where a person stands under: test_people)
    assert params.small_track_threshold == 0.1 and params.track_threshold == 0.4
    heights = np.array([10, 24, 32, 40, 200], np.float32)
    np.testing.assert_allclose(confirm_threshold(heights, params), [0.1, 0.1, 0.25, 0.4, 0.4], atol=1e-6)
    for height, score, kept in ((20, 0.15, True), (20, 0.08, False), (80, 0.25, False), (80, 0.45, True)):
        dets = _dets([(f, 10, 10, 10 + height, 10 + height, 0) for f in range(5)])
        dets.score[:] = score
        assert (len(track_class(dets, 0, params)) == 1) == kept, (height, score)
    flat = params.model_copy(update={"small_track_threshold": None})
    np.testing.assert_allclose(confirm_threshold(heights, flat), 0.4)


def test_a_weak_plate_needs_three_sightings_a_strong_one_needs_one():
    params = Config().tracking.plate  # confirmed at 0.5, or by 3 weak detections
    strong = _dets([(0, 100, 100, 160, 120, 1)])
    assert len(track_class(strong, 1, params)) == 1
    for hits, kept in ((2, False), (3, True)):
        weak = _dets([(3 * k, 100, 100, 160, 120, 1) for k in range(hits)])  # plates are detected every 3rd frame
        weak.score[:] = 0.3
        assert (len(track_class(weak, 1, params)) == 1) == kept


def test_grow_boxes_grows_each_side_by_a_share_of_the_size():
    grown = grow_boxes(np.array([[10, 20, 50, 30]], np.float32), 0.5)
    np.testing.assert_allclose(grown, [[-10, 15, 70, 35]])
    np.testing.assert_allclose(grow_boxes(grown, 0.0), grown)


def _fast_plate(step: float) -> Detections:
    """A 30x16 plate seen every 3rd frame, moving ``step`` px down between two looks (car_park_topdown: 35-55)."""
    return _dets([(3 * k, 300, 40 + step * k, 330, 56 + step * k, 1) for k in range(8)])


def test_a_plate_moving_further_than_its_size_between_looks_keeps_one_track():
    moving = _fast_plate(45.0)
    assert len(track_class(moving, 1, Config().tracking.plate)) == 1  # motion_buffer 2.0 by default
    off = Config().with_overrides(**{"tracking.plate.motion_buffer": 0.0}).tracking.plate
    assert len(track_class(moving, 1, off)) == 8  # each look its own track, masked where the plate was
    # the planned mask follows the plate between the looks instead of holding still behind it
    plan, _ = plan_masks(moving, 22, 640, 480, Config())
    at_four = plan.xyxy[plan.frame_index == 4]
    assert len(at_four) == 1
    plate_at_four = 40 + 45 * 4 / 3
    assert at_four[0, 1] <= plate_at_four and at_four[0, 3] >= plate_at_four + 16  # the plate is under it
    assert at_four[0, 1] > 56  # and has left the first look's place (y 40-56)


ROLLING = {"tracking.plate.roll_follows_motion": True}
"""The plate roll that follows motion: off by default (models/README.md, "Moving plates"), tested opted in."""


def test_a_plate_roll_follows_its_motion_when_asked_and_a_face_roll_holds_still():
    rows = [(3 * k, 300, 40 + 30 * k, 330, 56 + 30 * k, 1) for k in range(4)]  # 10 px a frame, last seen at 9
    plan, _ = plan_masks(_dets(rows), 30, 640, 480, Config().with_overrides(**ROLLING))
    last_seen = 40 + 30 * 3
    for frame in (11, 14):
        box = plan.xyxy[plan.frame_index == frame][0]
        plate_top = last_seen + 10 * (frame - 9)
        assert box[1] <= plate_top and box[3] >= plate_top + 16  # still under the mask, frames after
    assert not Config().tracking.plate.roll_follows_motion
    plan, _ = plan_masks(_dets(rows), 30, 640, 480, Config())
    assert plan.xyxy[plan.frame_index == 14][0][3] < last_seen + 50 + 16  # held: the plate has left it
    faces = _dets([(f, 300, 40 + 10 * f, 330, 70 + 10 * f, 0) for f in range(10)])  # a face, every frame
    plan, _ = plan_masks(faces, 30, 640, 480, Config())
    rolled = plan.xyxy[plan.frame_index > 9]
    assert len(rolled) == Config().tracking.face.post_roll and np.ptp(rolled[:, 1]) == 0  # held still


def test_frames_to_leave_counts_until_the_box_is_out_and_only_when_it_reaches_the_border_soon():
    box = np.array([1100, 350, 1250, 395], np.float32)
    right = np.array([3.0, 0, 3.0, 0], np.float32)
    assert frames_to_leave(box, right, (1280, 720), 25) == 25  # at the border in 10 frames, out in 60: capped
    assert frames_to_leave(box, right, (1280, 720), 100) == 60
    assert frames_to_leave(box, right, (1400, 720), 25) == 0  # the border is 50 frames away
    assert frames_to_leave(box, -right, (1280, 720), 500) == 417  # leftwards: out when x1 < 0
    assert frames_to_leave(box, np.zeros(4, np.float32), (1280, 720), 25) == 0
    giant = np.array([672, 0, 1280, 630], np.float32)  # a false plate box over half the frame, at its top edge
    assert frames_to_leave(giant, np.array([0, -2.3, 0, -2.3], np.float32), (1280, 720), 25) == 0  # jitter
    assert frames_to_leave(giant, np.array([0, -20, 0, -20], np.float32), (1280, 720), 25) == 25


def test_a_plate_leaving_the_frame_stays_masked_until_it_has_left_when_the_roll_follows_motion():
    # a plate drifting right at 3.5 px a frame, seen every 3rd frame until it is about to touch the border
    # (detectors lose plates cut by the frame's edge: the night clip of the synthetic set lost 24 frames)
    rows = [(3 * k, 1000 + 10.5 * k, 350, 1140 + 10.5 * k, 390, 1) for k in range(10)]  # last look: frame 27
    plan, _ = plan_masks(_dets(rows), 80, 1280, 720, Config().with_overrides(**ROLLING))
    frames = set(plan.frame_index.tolist())
    last_look, gap = 27, Config().tracking.plate.max_gap
    assert set(range(last_look, last_look + gap + 1)) <= frames  # rolled on, at most max_gap frames
    assert max(frames) == last_look + gap
    at = plan.frame_index == last_look + 20
    plate_x0 = 1000 + 3.5 * (last_look + 20)
    assert plan.xyxy[at][0, 0] <= plate_x0 and plan.xyxy[at][0, 2] == 1280  # over what is left of it
    plan, _ = plan_masks(_dets(rows), 80, 1280, 720, Config())  # the default holds still
    assert plan.frame_index.max() == last_look + Config().tracking.plate.post_roll


def test_a_roll_follows_only_steady_motion():
    """Linked false looks jump about (a logo's boxes on speech_face_360p): their roll holds still even when it
    follows motion; a plate moving steadily is rolled on."""
    steady = [(3 * k, 1000 + 10.5 * k, 350, 1140 + 10.5 * k, 390, 1) for k in range(10)]
    jumpy = [(3 * k, 1000 + (60 if k % 2 else 0) + 10.5 * k, 350, 1140 + (60 if k % 2 else 0) + 10.5 * k, 390, 1)
             for k in range(10)]  # each other look 60 px (0.43 box widths) on, then back
    for rows, rolled in ((steady, True), (jumpy, False)):
        plan, _ = plan_masks(_dets(rows), 80, 1280, 720, Config().with_overrides(**ROLLING))
        after = plan.xyxy[plan.frame_index > 27]
        assert (np.ptp(after[:, 0]) > 0) == rolled
        assert (plan.frame_index.max() > 27 + Config().tracking.plate.post_roll) == rolled


def test_the_motion_stage_leaves_two_fast_plates_side_by_side_two_tracks():
    # two plates 90 px apart, both moving 45 px down between looks: the grown boxes of each overlap the other's
    rows = [(3 * k, 100, 40 + 45 * k, 130, 56 + 45 * k, 1) for k in range(6)]
    rows += [(3 * k, 190, 40 + 45 * k, 220, 56 + 45 * k, 1) for k in range(6)]
    tracks = track_class(_dets(rows), 1, Config().tracking.plate)
    assert len(tracks) == 2
    assert sorted(np.ptp(np.array(t.boxes)[:, 0]) for t in tracks) == [0, 0]  # neither took the other's looks


def test_the_motion_stage_takes_only_strong_looks_and_tracks_of_the_last_look():
    # the stage serves a track's second look (from there on its velocity predicts where the plate is)
    params = Config().tracking.plate  # motion_buffer_gap 3: one plate look
    weak_second = _fast_plate(45.0)
    weak_second.score[1] = 0.3  # the look at frame 3, 45 px on: weak, so not taken by the first track
    assert [t.frames for t in track_class(weak_second, 1, params)] == [[0], [3, 6, 9, 12, 15, 18, 21]]
    missed = _fast_plate(25.0).select(np.arange(8) != 1)  # the look at frame 3 missed: 6 frames, 50 px on
    assert [t.frames[0] for t in track_class(missed, 1, params)] == [0, 6]
    assert len(track_class(missed, 1, params.model_copy(update={"motion_buffer_gap": 6}))) == 1


def test_the_motion_stage_reaches_back_one_detection_stride_at_least():
    config = Config().with_overrides(**{"detection.plate.stride": 5, "tracking.plate.motion_buffer_gap": 1})
    rows = [(5 * k, 300, 40 + 45 * k, 330, 56 + 45 * k, 1) for k in range(5)]  # a look every 5th frame
    plan, summary = plan_masks(_dets(rows), 30, 640, 480, config)
    assert summary.tracks["plate"] == 1


def test_faces_have_no_motion_stage_by_default():
    assert Config().tracking.face.motion_buffer == 0.0
    moving = _fast_plate(45.0)
    moving.cls[:] = 0
    assert len(track_class(moving, 0, Config().tracking.face)) > 1


def test_no_track_gap_or_roll_crosses_a_scene_cut():
    rows = [(f, 100, 100, 140, 140, 0) for f in range(0, 10)] + [(f, 100, 100, 140, 140, 0) for f in range(12, 20)]
    cuts = np.array([11])
    plan, summary = plan_masks(_dets(rows), 20, 640, 360, Config(), cuts)
    assert summary.tracks["face"] == 2  # the same place on both sides of the cut: still two objects
    # frames 10 (post-roll of shot 1) is masked, frame 11 (start of shot 2, before its first detection
    # but within pre-roll of frame 12) is masked by shot 2's pre-roll only: never by interpolation across
    assert set(plan.frame_index.tolist()) == set(range(20))
    shot_two = plan.track_id == plan.track_id[plan.frame_index == 12][0]
    assert plan.frame_index[shot_two].min() == 11
    shot_one = ~shot_two
    assert plan.frame_index[shot_one].max() == 10
