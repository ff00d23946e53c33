"""Person context for the face tracker: people.py's geometry, the tracker's gate and the person detector."""

import numpy as np
from _detections import detections_from_rows
from skimage import data as skimage_data

from anonray.config import Config
from anonray.detect.frame_detector import FrameDetector
from anonray.track.people import PeopleSeen
from anonray.track.tracker import plan_masks
from anonray.types import PERSON_CLASS

PERSON = (300.0, 100.0, 400.0, 400.0)
"""A standing person 300 px tall: the head end is y 55..166 (15% above the top to 22% down)."""


def _face_track(box: tuple[float, ...], score: float, frames: range = range(10)) -> list:
    return [(f, box, score, 0) for f in frames]


def _people(frames: range = range(0, 10, 5)) -> list:
    return [(f, PERSON, 0.8, PERSON_CLASS) for f in frames]


def _masked_tracks(rows: list, config: Config | None = None) -> int:
    plan, summary = plan_masks(detections_from_rows(rows), 10, 640, 480, config or Config())
    return summary.tracks["face"]


def test_head_end_of_a_person_supports_a_face_and_the_rest_does_not():
    seen = PeopleSeen.from_detections(detections_from_rows(_people()), stride=5)
    head = np.array([340, 110, 360, 130], np.float32)
    assert seen.supports(0, head) and seen.supports(3, head)  # frame 3: the people of frames 0 and 5
    assert not seen.supports(3, np.array([340, 250, 360, 270], np.float32))  # a hand or a shirt: mid-body
    assert not seen.supports(3, np.array([100, 110, 120, 130], np.float32))  # beside the person
    assert not seen.supports(12, head)  # frames 10 and 15 saw nobody
    assert not PeopleSeen.from_detections(detections_from_rows(_face_track(tuple(head), 0.9)), 5).supports(0, head)


def test_a_weak_small_face_is_masked_under_a_person_and_not_alone():
    weak_head = (340, 110, 360, 130)  # 20 px, scored 0.25: above the small-face threshold (0.1), below 0.4
    assert _masked_tracks(_face_track(weak_head, 0.25) + _people()) == 1
    assert _masked_tracks(_face_track(weak_head, 0.25)) == 0  # nobody under it: a crest, a sign
    assert _masked_tracks(_face_track((340, 250, 360, 270), 0.25) + _people()) == 0  # mid-body
    assert _masked_tracks(_face_track(weak_head, 0.45)) == 1  # alone but strong: always masked
    assert _masked_tracks(_face_track(weak_head, 0.12) + _people()) == 1
    assert _masked_tracks(_face_track(weak_head, 0.08) + _people()) == 0  # below the small-face threshold


def _alone_track_masked(peaks: dict[int, float], frames: int = 58, people: bool = False) -> bool:
    """A 26 px face track of ``frames`` detections at 0.15 (a wing mirror), with ``peaks`` {frame: score}."""
    box = (340.0, 110.0, 366.0, 136.0)
    rows = [(f, box, peaks.get(f, 0.15), 0) for f in range(frames)]
    rows += _people(range(0, frames, 5)) if people else []
    plan, summary = plan_masks(detections_from_rows(rows), frames, 640, 480, Config())
    return summary.tracks["face"] == 1


def test_a_long_alone_face_needs_more_than_one_peak():
    assert Config().tracking.face.alone_repeat_share == 0.1 and Config().tracking.face.alone_sure_threshold == 0.5
    assert not _alone_track_masked({20: 0.45})  # one look of 58 reaches 0.4: a mirror, a crest
    assert not _alone_track_masked({f: 0.42 for f in (5, 15, 25, 35, 45)})  # 5 of 58: under one in ten
    assert _alone_track_masked({f: 0.42 for f in (5, 15, 25, 35, 45, 55)})  # 6 of 58
    assert _alone_track_masked({20: 0.5})  # alone_sure_threshold: one look is enough
    assert _alone_track_masked({5: 0.45}, frames=10)  # one in ten
    assert not _alone_track_masked({5: 0.45}, frames=11)
    assert _alone_track_masked({20: 0.45}, people=True)  # a person under it confirms it as before
    off = Config().with_overrides(**{"tracking.face.alone_repeat_share": 0.0})
    box = (340.0, 110.0, 366.0, 136.0)
    rows = [(f, box, 0.45 if f == 20 else 0.15, 0) for f in range(58)]
    assert plan_masks(detections_from_rows(rows), 58, 640, 480, off)[1].tracks["face"] == 1


def test_the_person_check_can_be_switched_off():
    weak_alone = _face_track((340, 110, 360, 130), 0.25)
    for setting in ({"detection.person.enabled": False}, {"tracking.face.alone_track_threshold": None}):
        config = Config().with_overrides(**setting)
        assert not config.detects_people
        assert _masked_tracks(weak_alone, config) == 1


def test_a_track_needs_support_on_a_share_of_its_frames():
    head = (340, 110, 360, 130)
    rows = _face_track(head, 0.25, range(10))
    assert _masked_tracks(rows + _people(range(0, 10, 5))) == 1
    assert _masked_tracks(rows + [(0, PERSON, 0.8, PERSON_CLASS)]) == 1  # frames 0-4 near frame 0: half
    far = [(f, (340, 110 + 8 * f, 360, 130 + 8 * f), 0.25, 0) for f in range(10)]  # drifts down the body
    assert _masked_tracks(far + [(f, PERSON, 0.8, PERSON_CLASS) for f in (0, 5, 10)]) == 1
    late = [(f, head, 0.25, 0) for f in range(10)]
    assert _masked_tracks(late + [(5, (0, 0, 50, 400), 0.8, PERSON_CLASS)]) == 0


def test_frame_detector_finds_the_astronaut_on_the_person_stride_only():
    """The person network (float) finds the astronaut (upper body, 512x512) on frames 0, 5, 10 of 3..12 and
    reports it in source pixels, as class PERSON_CLASS; the model is recorded."""
    image = skimage_data.astronaut()
    det = FrameDetector(Config().with_overrides(classes=["face"]), device="cpu")
    out = det.detect([image] * 10, np.arange(3, 13), (1024, 1024))
    people = out.select(out.cls == PERSON_CLASS)
    assert sorted(set(people.frame_index.tolist())) == [5, 10]
    assert len(people) == 2 and people.score.min() > 0.5
    x1, y1, x2, y2 = people.xyxy[0]
    assert x1 < 150 and y1 < 150 and x2 > 600 and y2 > 900  # the whole upper body, doubled to source pixels
    assert out.count_by_class()["face"] == 10  # people are not counted among faces or plates
    assert "person-yolo11n-pose" in det.model_ids()
    assert FrameDetector(Config().with_overrides(classes=["plate"]), device="cpu").persons is None
    small = np.zeros((270, 480, 3), np.uint8)
    assert det.persons.network_size(small) == 480  # a small frame is not upscaled for people (half the cost)


def test_person_network_gives_the_same_boxes_through_ultralytics_and_openvino():
    """The GPU path (ultralytics, torch) and the CPU path (OpenVINO fp32, the pose channels cut off after the
    person score) give the same person box."""
    from anonray.detect.models import model_path
    from anonray.detect.plates import PlateDetector

    settings = dict(input_size=640, threshold=0.25, nms_iou=0.6, device="cpu", class_count=1)
    path = model_path("person-yolo11n-pose")
    (torch_boxes, torch_scores), = PlateDetector(path, backend="torch", **settings).detect([skimage_data.astronaut()])
    (ov_boxes, ov_scores), = PlateDetector(path, backend="openvino", cpu_precision="fp32", **settings).detect(
        [skimage_data.astronaut()])
    assert len(torch_boxes) == len(ov_boxes) == 1
    np.testing.assert_allclose(ov_boxes, torch_boxes, atol=1.0)
    np.testing.assert_allclose(ov_scores, torch_scores, atol=0.01)


def test_a_rotated_video_is_judged_upright():
    """Boxes travel in stored-frame pixels; a phone clip stored sideways (rotation 90 or 270) has the head at the
    left or right end of the stored person box. The check turns both boxes upright first."""
    from anonray.decode.orientation import boxes_to_display, boxes_to_stored

    upright_person = np.array([[100, 100, 200, 400]], np.float32)  # display pixels of a 480x640 upright frame
    upright_head = np.array([[140, 110, 160, 130]], np.float32)
    upright_belly = np.array([[140, 250, 160, 270]], np.float32)
    for rotation in (0, 90, 180, 270):
        size = (640, 480) if rotation in (90, 270) else (480, 640)  # the stored frame of an upright 480x640

        def to_stored(boxes: np.ndarray, rotation: int = rotation, size: tuple[int, int] = size) -> np.ndarray:
            return boxes_to_stored(boxes, rotation, *size)

        np.testing.assert_allclose(boxes_to_display(to_stored(upright_person), rotation, *size), upright_person)
        rows = [(0, tuple(to_stored(upright_person)[0]), 0.8, PERSON_CLASS)]
        seen = PeopleSeen.from_detections(detections_from_rows(rows), 5, rotation, size)
        assert seen.supports(0, to_stored(upright_head)[0]), rotation
        assert not seen.supports(0, to_stored(upright_belly)[0]), rotation
        faces = [(f, tuple(to_stored(upright_head)[0]), 0.25, 0) for f in range(5)]
        plan, summary = plan_masks(detections_from_rows(rows + faces), 5, size[0], size[1], Config(),
                                   rotation=rotation)
        assert summary.tracks["face"] == 1, rotation
