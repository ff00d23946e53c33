"""Faces in a crowd (track/crowd.py): confirmed faces beside a weak face track stand in for a person."""

import numpy as np
from _detections import detections_from_rows

from anonray.config import Config
from anonray.track.crowd import ConfirmedFaces, CrowdRule
from anonray.track.tracker import plan_masks
from anonray.types import PERSON_CLASS

FRAMES = 12
ROW_Y = 200.0
"""A row of 20 px heads, 30 px apart: within crowd_reach (8 face heights, 160 px) of each other."""
STEP = 30.0


def _head(x: float, y: float = ROW_Y, size: float = 20.0) -> tuple[float, ...]:
    return (x, y, x + size, y + size)


def _track(box: tuple[float, ...], score: float) -> list:
    return [(f, box, score, 0) for f in range(FRAMES)]


def _masked(faces: list, config: Config | None = None) -> int:
    """Face tracks masked; people were looked for (on the person stride) and one stands far away."""
    far_person = [(f, (1100.0, 300.0, 1180.0, 600.0), 0.8, PERSON_CLASS) for f in range(0, FRAMES, 5)]
    plan, summary = plan_masks(detections_from_rows(faces + far_person), FRAMES, 1280, 720, config or Config())
    return summary.tracks["face"]


def _strong_row(count: int = 3) -> list:
    return [row for i in range(count) for row in _track(_head(100.0 + STEP * i), 0.6)]


def test_a_weak_face_in_a_row_of_confirmed_faces_is_masked():
    weak = _track(_head(100.0 + STEP * 3), 0.2)  # 20 px at 0.2: a small face's score, under the 0.4 alone needs
    assert _masked(_strong_row()) == 3
    assert _masked(_strong_row() + weak) == 4
    assert _masked(_strong_row(2) + weak) == 2  # two neighbours are not a crowd (crowd_neighbours 3)
    off = Config().with_overrides(**{"tracking.face.crowd_neighbours": 0})
    assert _masked(_strong_row() + weak, off) == 3


def test_a_weak_face_off_the_row_or_of_another_size_is_not_masked():
    below = _track(_head(190.0, ROW_Y + 60), 0.2)  # three face heights down: a hand, a shirt
    assert _masked(_strong_row() + below) == 3
    far = _track(_head(160.0 + 20 * 9), 0.2)  # nine face heights from the nearest
    assert _masked(_strong_row(3) + far) == 3
    large = _track(_head(190.0, ROW_Y - 20, size=60.0), 0.2)  # three times their height: a sign, a crest
    assert _masked(_strong_row() + large) == 3


def test_a_weak_face_still_needs_its_own_confirming_score():
    too_weak = _track(_head(190.0), 0.08)  # under the small-face confirming score (0.1): texture in the row
    assert _masked(_strong_row() + too_weak) == 3


def test_support_does_not_spread_from_one_crowd_confirmed_face_to_the_next():
    faces = ConfirmedFaces([[0, 1]], [[np.array(_head(100.0)), np.array(_head(100.0))]])
    rule = CrowdRule(neighbours=1, reach=8.0, rise=1.0, share=0.5, min_hits=2)
    assert faces.neighbours(0, np.array(_head(200.0)), rule) == 1
    assert faces.neighbours(0, np.array(_head(100.0)), rule) == 0  # itself (the same place) is no neighbour
    assert not faces.supports_track([0], [np.array(_head(200.0))], rule)  # under min_hits
    assert faces.supports_track([0, 1, 2], [np.array(_head(200.0))] * 3, rule)  # 2 of 3 frames
    weak = [row for x in (190.0, 250.0, 280.0) for row in _track(_head(x), 0.2)]
    # 190 and 250 have the three confirmed heads (100, 130, 160) within 160 px; 280 has two of them (130, 160)
    # and the crowd-confirmed 190 and 250, which do not count
    assert _masked(_strong_row() + weak) == 3 + 2


def test_a_fragment_lying_on_a_confirmed_face_is_masked_with_it():
    """Noise makes the detector's box jump in size and one face becomes two tracks: the weak one, on the
    confirmed face for at least fragment_share (0.3) of its detections, is that face."""
    face = _head(400.0)
    loose = (395.0, ROW_Y - 5, 425.0, ROW_Y + 25)  # 30 px about the same centre: IoU 0.44 with the face
    fragment = [(f, loose, 0.08, 0) for f in range(FRAMES)]  # under its confirming score, nobody under it
    assert _masked(_track(face, 0.6) + fragment) == 2
    off = Config().with_overrides(**{"tracking.face.fragment_iou": 0.0})
    assert _masked(_track(face, 0.6) + fragment, off) == 1
    brief_face = [(f, face, 0.6, 0) for f in range(2)]  # the face seen on frames 0-1 only: 3 of 12 (frame 2 is
    assert _masked(brief_face + fragment) == 1  # next to frame 1) under 0.3
    beside = [(f, (430.0, ROW_Y, 450.0, ROW_Y + 20), 0.08, 0) for f in range(FRAMES)]  # touching, not on it
    assert _masked(_track(face, 0.6) + beside) == 1


def test_a_row_of_heads_is_found_upright_in_a_video_stored_sideways():
    """A phone clip stored sideways (display rotation 90 or 270): the row of heads is a column of stored pixels.
    The rule turns the boxes upright first, as people.py does."""
    from anonray.decode.orientation import boxes_to_stored

    upright = [_head(100.0 + STEP * i) for i in range(4)]  # a row in the upright 1280x720 picture
    for rotation in (0, 90, 270):
        size = (720, 1280) if rotation in (90, 270) else (1280, 720)
        stored = boxes_to_stored(np.array(upright, np.float32), rotation, *size)
        rows = [(f, tuple(stored[i]), 0.6 if i < 3 else 0.2, 0) for i in range(4) for f in range(FRAMES)]
        plan, summary = plan_masks(detections_from_rows(rows), FRAMES, size[0], size[1], Config(), rotation=rotation)
        assert summary.tracks["face"] == 4, rotation
