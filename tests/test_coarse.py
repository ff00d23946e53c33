"""The shrunk second look at plates (detect/coarse.py): which of its boxes join the main look's, and a real
close-up plate the main look misses."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from anonray.config import Config
from anonray.detect import models
from anonray.detect.coarse import CoarseLook
from anonray.detect.frame_detector import FrameDetector
from benchmarks.accuracy.datasets import DEFAULT_DATA

PLATES = DEFAULT_DATA / "plates/ro_dashcam"
PLATE_IMAGE = "images/ro_003.jpg"


class _Fixed:
    """A detector that finds the same boxes on every image; its network input is 1280 px."""

    def __init__(self, boxes: list[tuple[float, float, float, float, float]]) -> None:
        rows = np.array(boxes, np.float32).reshape(-1, 5)
        self.boxes = (rows[:, :4], rows[:, 4])

    def detect(self, images):
        return [self.boxes for _ in images]

    def network_size(self, image: np.ndarray) -> int:
        return 1280


def test_only_large_well_scored_coarse_boxes_join_the_main_look() -> None:
    image = np.zeros((360, 640, 3), np.uint8)  # shown to the main look at 2x: 1280 / 640
    main = _Fixed([(10, 10, 60, 30, 0.5)])
    coarse = _Fixed([
        (100, 100, 300, 160, 0.7),  # 60 px here, 120 at the main look's scale: kept
        (100, 200, 200, 230, 0.7),  # 30 px here, 60 there: under 64, the main look's own
        (400, 100, 600, 200, 0.55),  # large but under the threshold
        (12, 10, 60, 31, 0.9),  # large enough? no: 21 px (42 there)
        (8, 5, 62, 40, 0.8),  # 35 px (70 there) around the main box: the plate the main look found
        (500, 250, 600, 300, 0.8),  # 50 px (100 there), beside the main box: kept
    ])
    look = CoarseLook(main, coarse, min_height=64, threshold=0.6, iou=0.5)
    (xyxy, score), = look.detect([image])
    got = sorted((tuple(b), round(float(s), 2)) for b, s in zip(xyxy.tolist(), score, strict=True))
    assert got == [((10.0, 10.0, 60.0, 30.0), 0.5), ((100.0, 100.0, 300.0, 160.0), 0.7),
                   ((500.0, 250.0, 600.0, 300.0), 0.8)]


def test_a_coarse_box_joins_a_large_main_box_inside_it() -> None:
    """A main box 40 px tall (80 at its scale, over min_height) inside a coarse box: a piece of a close-up plate
    the main look saw in part; both are kept (they overlap too little for NMS)."""
    image = np.zeros((360, 640, 3), np.uint8)
    main = _Fixed([(100, 100, 160, 140, 0.5)])
    coarse = _Fixed([(60, 60, 360, 200, 0.7)])
    look = CoarseLook(main, coarse, min_height=64, threshold=0.6, iou=0.5)
    (xyxy, score), = look.detect([image])
    got = sorted((tuple(b), round(float(s), 2)) for b, s in zip(xyxy.tolist(), score, strict=True))
    assert got == [((60.0, 60.0, 360.0, 200.0), 0.7), ((100.0, 100.0, 160.0, 140.0), 0.5)]


def test_a_coarse_box_over_most_of_the_frame_is_dropped() -> None:
    """The shrunk look once boxed a whole 480x270 frame at 0.605 (intel_face-demographics-walking): a box over
    max_frame_share of the frame is the picture, not a plate; a plate cut by the frame's edges is smaller."""
    image = np.zeros((270, 480, 3), np.uint8)
    main = _Fixed([])
    whole = (12, 0, 480, 270, 0.61)  # 97.5% of the frame
    edge_cut = (0, 60, 480, 210, 0.7)  # a close-up plate cut at both sides: 56% of the frame
    coarse = _Fixed([whole, edge_cut])
    for share, kept in ((0.8, [edge_cut]), (1.0, [edge_cut, whole])):
        look = CoarseLook(main, coarse, min_height=64, threshold=0.6, iou=0.5, max_frame_share=share)
        (xyxy, score), = look.detect([image])
        got = sorted(tuple(b) + (round(float(s), 2),) for b, s in zip(xyxy.tolist(), score, strict=True))
        assert got == sorted(tuple(float(v) for v in b) for b in kept), share


def _zoomed_plate(height: int) -> tuple[np.ndarray, np.ndarray]:
    """ro_003.jpg zoomed about its plate until the plate is ``height`` px tall, in a 1280x720 frame (RGB)."""
    if not (PLATES / "labels.json").is_file():
        pytest.skip(f"plate test data absent ({PLATES}); set ANONRAY_EVAL_DATA or put it in ../shared/data")
    labels = json.loads((PLATES / "labels.json").read_text())
    x1, y1, x2, y2 = next(b["box"] for b in labels[PLATE_IMAGE] if b["cls"] == "plate")
    rgb = cv2.cvtColor(cv2.imread(str(PLATES / PLATE_IMAGE)), cv2.COLOR_BGR2RGB)
    zoom = height / (y2 - y1)
    shift = (640 - zoom * (x1 + x2) / 2, 360 - zoom * (y1 + y2) / 2)
    matrix = np.array([[zoom, 0, shift[0]], [0, zoom, shift[1]]], np.float32)
    frame = cv2.warpAffine(rgb, matrix, (1280, 720), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    box = np.array([zoom * x1 + shift[0], zoom * y1 + shift[1], zoom * x2 + shift[0], zoom * y2 + shift[1]])
    return frame, box


def _covered(found, box: np.ndarray) -> float:
    """The largest share of ``box`` one found box covers."""
    best = 0.0
    for b in found.xyxy:
        ix = max(0.0, min(b[2], box[2]) - max(b[0], box[0])) * max(0.0, min(b[3], box[3]) - max(b[1], box[1]))
        best = max(best, ix / ((box[2] - box[0]) * (box[3] - box[1])))
    return best


def test_a_close_up_plate_is_found_by_the_shrunk_look_only() -> None:
    """A real plate 150 px tall (594 px wide) in a 1280x720 frame: the 1280 px look alone finds nothing there;
    with the shrunk look at 320 px (the default) it is found and masked whole."""
    models.pull_models()
    frame, box = _zoomed_plate(150)
    shrunk = Config().with_overrides(classes=["plate"])
    assert shrunk.detection.plate.coarse_input_size == 320
    main_only = shrunk.with_overrides(**{"detection.plate.coarse_input_size": None})
    assert _covered(FrameDetector(main_only, device="cpu").detect([frame], [0], (1280, 720)), box) < 0.3
    assert _covered(FrameDetector(shrunk, device="cpu").detect([frame], [0], (1280, 720)), box) >= 0.95
