"""The low-light look at dark frames (anonray/detect/low_light.py): shrinking, stacking, mapping boxes back."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from anonray.config import Config
from anonray.detect import low_light as ll
from anonray.detect import models
from benchmarks.accuracy.datasets import DEFAULT_DATA

PLATES = DEFAULT_DATA / "plates/ro_dashcam"
DARK_PLATE_IMAGE = "images/ro_129.jpg"
"""A grey plate on a dark car: at 35% brightness with noise sigma 8 no plate model finds it in one frame."""


def scene(h: int = 360, w: int = 640, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (something for the alignment to hold on to)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (h // 16, w // 16, 3)).astype(np.float32)
    return cv2.GaussianBlur(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 3).clip(0, 255)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The image content moved by (dx, dy) pixels."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)


def darkened(image: np.ndarray, rng: np.random.Generator, sigma: float = 8.0) -> np.ndarray:
    """As the accuracy harness darkens its dark clip: 35% brightness plus Gaussian noise."""
    return (image.astype(np.float32) * 0.35 + rng.normal(0, sigma, image.shape)).clip(0, 255).astype(np.uint8)


def test_shrinking_averages_noise_and_keeps_small_images() -> None:
    rng = np.random.default_rng(1)
    noisy = (np.full((720, 1280, 3), 40.0) + rng.normal(0, 8, (720, 1280, 3))).clip(0, 255).astype(np.uint8)
    small = ll.shrunk(noisy, 320)
    assert small.shape == (180, 320, 3)
    assert abs(float(small.mean()) - float(noisy.mean())) < 0.5  # brightness kept
    assert float(small.std()) < float(noisy.std()) / 3  # 16 pixels averaged: noise / 4
    tiny = noisy[:100, :200]
    assert ll.shrunk(tiny, 320) is tiny  # never enlarged


def test_a_stack_aligns_moving_frames_and_averages_their_noise() -> None:
    clean = scene()
    rng = np.random.default_rng(2)
    moves = [(-3.0 + k, 0.5 * k - 2.0) for k in range(8)]  # the camera pans slowly
    frames = [darkened(shifted(clean, dx, dy), rng) for dx, dy in moves]
    (stack,) = ll.stacks(frames)
    assert stack.members == list(range(8))
    middle = 3  # (8 - 1) // 2
    for k, (dx, dy) in enumerate(moves):
        # the map takes the middle frame's pixels to frame k's: a pure shift by the difference of the moves
        want = np.float32([[1, 0, dx - moves[middle][0]], [0, 1, dy - moves[middle][1]]])
        np.testing.assert_allclose(stack.maps[k], want, atol=0.25)
    truth = (shifted(clean, *moves[middle]) * 0.35)[16:-16, 16:-16]
    error_one = np.sqrt(((frames[middle][16:-16, 16:-16] - truth) ** 2).mean())
    error_mean = np.sqrt(((stack.mean[16:-16, 16:-16] - truth) ** 2).mean())
    assert error_mean < error_one / 2  # 8 frames: noise / 2.8


def test_a_cut_splits_the_stack() -> None:
    rng = np.random.default_rng(3)
    a, b = scene(seed=4), scene(seed=5)
    frames = [darkened(shifted(a, k, 0), rng) for k in range(4)] + [darkened(shifted(b, k, 0), rng) for k in range(4)]
    found = ll.stacks(frames)
    assert sorted(s.members for s in found) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_boxes_follow_the_map() -> None:
    boxes = np.array([[10, 20, 50, 40]], np.float32)
    np.testing.assert_allclose(ll.mapped(boxes, ll.IDENTITY_WARP), boxes)
    np.testing.assert_allclose(ll.mapped(boxes, np.float32([[1, 0, 5], [0, 1, -2]])), [[15, 18, 55, 38]])
    np.testing.assert_allclose(ll.mapped(boxes, np.float32([[2, 0, 0], [0, 2, 0]])), [[20, 40, 100, 80]])
    assert ll.mapped(np.zeros((0, 4), np.float32), ll.IDENTITY_WARP).shape == (0, 4)


class Recording:
    """A stand-in plate detector: one box at a fixed place of every image it sees (recorded)."""

    def __init__(self, box=(100, 50, 140, 60)) -> None:
        self.seen: list[np.ndarray] = []
        self.box = np.array([box], np.float32)

    def detect(self, images):
        self.seen.extend(images)
        return [(self.box.copy(), np.array([0.9], np.float32)) for _ in images]


def test_bright_frames_get_no_second_look() -> None:
    bright = [scene(seed=k).astype(np.uint8) for k in range(3)]
    assert all(ll.frame_luma(img) >= 50 for img in bright)
    det = Recording()
    found = [None, (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)), None]
    assert ll.with_low_light_pass(bright, [0, 1, 2], found, (det, det), 50.0, 0.5, 512, 8) is found
    assert det.seen == []


def test_dark_runs_are_stacked_shrunk_and_their_boxes_mapped_back() -> None:
    rng = np.random.default_rng(6)
    clean = scene(720, 1280, seed=7)
    frames = [darkened(shifted(clean, 2 * k, 0), rng) for k in range(6)]
    bright = scene(720, 1280, seed=8).astype(np.uint8)
    images = frames[:3] + [bright] + frames[3:]
    indices = [10, 11, 12, 13, 20, 21, 22]  # dark run 10-12, a bright frame, dark run 20-22
    det, each = Recording(), Recording((300, 300, 340, 310))
    out = ll.with_low_light_pass(images, indices, [None] * 7, (each, det), 50.0, 0.5, 640, 8)
    assert len(each.seen) == 6  # the per-frame look: each dark frame, full size, brightened
    assert all(img.shape == (720, 1280, 3) and abs(ll.frame_luma(img) - ll.TARGET_LUMA) < 10 for img in each.seen)
    assert len(det.seen) == 2  # the stacked look: one averaged image per run
    assert all(img.shape == (360, 640, 3) for img in det.seen)  # shrunk to the input size
    assert all(abs(ll.frame_luma(img) - ll.TARGET_LUMA) < 10 for img in det.seen)  # and brightened
    assert out[3] is None  # the bright frame: untouched
    # each dark frame gets the box, doubled back to full size and moved with the frame (2 px per frame)
    for i, middle in ((0, 1), (1, 1), (2, 1), (4, 5), (5, 5), (6, 5)):
        shift = 2 * ((i if i < 3 else i - 1) - (middle if middle < 3 else middle - 1))
        (mine, its), scores = out[i]  # the per-frame look's box, as found, and the stack's
        np.testing.assert_allclose(mine, [300, 300, 340, 310])
        np.testing.assert_allclose(its, [200 + shift, 100, 280 + shift, 120], atol=1.0)
        assert scores.tolist() == pytest.approx([0.9, 0.9])
    det.seen.clear()
    ll.with_low_light_pass(images, indices, [None] * 7, (None, det), 50.0, 0.5, 640, 1)
    assert len(det.seen) == 6  # stack 1: each dark frame alone
    det.seen.clear()
    ll.with_low_light_pass(images, indices, [None] * 7, (None, det), 50.0, 0.5, 640, 0)
    assert det.seen == []  # stack 0: no stacked look


def test_unbrightened_look_sees_each_dark_frame_as_it_is() -> None:
    """low_light_unbrightened: the per-frame look also gets each dark frame untouched; both boxes are kept."""
    rng = np.random.default_rng(9)
    images = [darkened(shifted(scene(360, 640, seed=3), k, 0), rng) for k in range(3)]
    each = Recording((300, 300, 340, 310))
    out = ll.with_low_light_pass(images, [0, 1, 2], [None] * 3, (each, None), 50.0, 0.5, 640, 0, unbrightened=True)
    assert len(each.seen) == 6
    assert all(abs(ll.frame_luma(img) - ll.TARGET_LUMA) < 10 for img in each.seen[:3])  # brightened
    assert all(a is b for a, b in zip(each.seen[3:], images, strict=True))  # then as they are
    assert all(len(boxes[0]) == 1 for boxes in out)  # the same box twice: merged by NMS


def test_ensemble_unites_its_detectors() -> None:
    a, b = Recording((0, 0, 10, 10)), Recording((50, 50, 60, 60))
    ((xyxy, score),) = ll.Ensemble([a, b], 0.5).detect([np.zeros((8, 8, 3), np.uint8)])
    assert sorted(xyxy[:, 0].tolist()) == [0, 50] and len(score) == 2
    ((xyxy, _),) = ll.Ensemble([a, Recording((0, 0, 10, 11))], 0.5).detect([np.zeros((8, 8, 3), np.uint8)])
    assert len(xyxy) == 1  # the same plate twice: kept once


def test_the_look_finds_a_plate_that_noise_hides_from_the_plate_model() -> None:
    """Eight dark, noisy frames of a slowly panning dashcam still: the plate model alone misses the plate
    on every frame, and so does the low-light model on each brightened frame; the stacked look (the
    defaults) finds it on every frame."""
    from anonray.detect.frame_detector import FrameDetector, passes_threshold

    if not (PLATES / "labels.json").is_file():
        pytest.skip(f"plate test data absent ({PLATES}); set ANONRAY_EVAL_DATA or put it in ../shared/data")
    models.pull_models()
    labels = json.loads((PLATES / "labels.json").read_text())
    (plate,) = [b["box"] for b in labels[DARK_PLATE_IMAGE] if b["cls"] == "plate" and not b["ignore"]]
    still = np.ascontiguousarray(cv2.imread(str(PLATES / DARK_PLATE_IMAGE))[:, :, ::-1])
    rng = np.random.default_rng(0)
    frames = [darkened(shifted(still, -k, -k / 2), rng) for k in range(8)]
    size = (still.shape[1], still.shape[0])
    cfg = Config().with_overrides(classes=["plate"], **{"detection.plate.stride": 1})

    def hits(config: Config) -> int:
        found = FrameDetector(config, device="cpu", cpu_threads=1).detect(frames, list(range(8)), size)
        keep = passes_threshold(found.xyxy, found.score, config.detection.plate)
        n = 0
        for k in range(8):
            want = np.array(plate, np.float32) - np.float32([k, k / 2, k, k / 2])
            boxes = found.xyxy[keep & (found.frame_index == k)]
            n += any(_iou(b, want) >= 0.5 for b in boxes)
        return n

    assert hits(cfg.with_overrides(**{"detection.plate.low_light_model": None})) == 0
    assert hits(cfg.with_overrides(**{"detection.plate.low_light_stack": 0})) == 0
    assert hits(cfg) == 8


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
