"""benchmarks/accuracy/matching.py: greedy IoU matching, ignore labels, AP50, size buckets."""

import math

import numpy as np
import pytest

from benchmarks.accuracy.matching import (
    FP,
    IGNORED,
    TP,
    Accumulator,
    average_precision,
    iou_matrix,
    match_image,
    size_bucket,
)

GT = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]], float)


def test_iou_matrix():
    iou = iou_matrix(np.array([[0, 0, 10, 10], [5, 0, 15, 10]]), np.array([[0, 0, 10, 10]]))
    assert iou[:, 0] == pytest.approx([1.0, 50 / 150])
    assert iou_matrix(np.zeros((0, 4)), GT).shape == (0, 3)


def test_perfect_detector_has_ap_one_and_full_recall():
    acc = Accumulator()
    matched = acc.add(GT, [0.9, 0.8, 0.7], GT)
    assert matched.all()
    s = acc.scores(0.5)
    assert (s.ap50, s.recall, s.precision, s.tp, s.fp, s.n_labels) == (1.0, 1.0, 1.0, 3, 0, 3)


def test_false_positive_ranked_first():
    dets = np.vstack([[100, 100, 110, 110], GT])
    scores = [0.99, 0.9, 0.8, 0.7]
    outcome, _ = match_image(dets, scores, GT)
    assert outcome.tolist() == [FP, TP, TP, TP]
    # precision after each: 0, 1/2, 2/3, 3/4 -> interpolated 3/4 over all recall
    assert average_precision(scores, outcome, 3) == pytest.approx(0.75)
    # ranked last, it costs nothing
    assert average_precision([0.1, 0.9, 0.8, 0.7], outcome, 3) == pytest.approx(1.0)


def test_duplicate_is_a_false_positive_and_misses_lower_recall():
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 9]], float)
    outcome, matched = match_image(dets, [0.9, 0.8], GT)
    assert outcome.tolist() == [TP, FP]
    assert matched.tolist() == [True, False, False]
    assert average_precision([0.9, 0.8], outcome, 3) == pytest.approx(1 / 3)


def test_iou_threshold_is_inclusive_half():
    gt = np.array([[0, 0, 10, 10]], float)
    half = np.array([[0, 0, 10, 5]], float)  # IoU exactly 0.5
    assert match_image(half, [1.0], gt)[0].tolist() == [TP]
    assert match_image(np.array([[0, 0, 10, 4.9]]), [1.0], gt)[0].tolist() == [FP]


def test_higher_score_takes_the_label():
    gt = np.array([[0, 0, 10, 10]], float)
    dets = np.array([[0, 0, 10, 8], [0, 0, 10, 10]], float)  # the better box scores lower
    assert match_image(dets, [0.9, 0.5], gt)[0].tolist() == [TP, FP]


def test_ignore_labels_are_neither_hits_nor_false_positives_nor_misses():
    ignore = np.array([False, True, False])
    dets = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [200, 200, 210, 210]], float)
    outcome, matched = match_image(dets, [0.9, 0.95, 0.1], GT, ignore)
    assert outcome.tolist() == [TP, IGNORED, FP]
    assert matched.tolist() == [True, False, False]
    acc = Accumulator()
    acc.add(dets, [0.9, 0.95, 0.1], GT, ignore)
    s = acc.scores(0.5)
    assert (s.n_labels, s.tp, s.fp, s.recall, s.precision) == (2, 1, 0, 0.5, 1.0)
    # the ignored detection ranked first does not lower AP; the late FP comes after recall 1/2
    assert s.ap50 == pytest.approx(0.5)


def test_counted_label_preferred_over_ignore_label():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    outcome, matched = match_image(gt[:1], [0.9], gt, np.array([True, False]))
    assert outcome.tolist() == [TP] and matched.tolist() == [False, True]


def test_threshold_reads_the_same_pooled_outcomes():
    acc = Accumulator()
    dets = np.vstack([GT, [[100, 100, 110, 110]]])
    acc.add(dets, [0.9, 0.3, 0.1, 0.6], GT)
    acc.add(np.zeros((0, 4)), [], np.array([[0, 0, 5, 5]], float))  # an image with one miss
    hi, lo = acc.scores(0.5), acc.scores(0.05)
    assert (hi.tp, hi.fp, hi.n_labels) == (1, 1, 4)
    assert (lo.tp, lo.fp) == (3, 1)
    assert hi.recall == 0.25 and hi.precision == 0.5
    assert hi.ap50 == lo.ap50  # AP does not depend on the operating threshold


def test_no_labels_and_no_detections():
    acc = Accumulator()
    acc.add(np.zeros((0, 4)), [], np.zeros((0, 4)))
    s = acc.scores(0.5)
    assert math.isnan(s.ap50) and math.isnan(s.recall) and math.isnan(s.precision)
    assert s.as_dict()["ap50"] is None
    assert average_precision([], [], 2) == 0.0


def test_size_bucket_by_height():
    boxes = np.array([[0, 0, 100, 15.9], [0, 0, 1, 16], [0, 0, 1, 31.9], [0, 0, 1, 32], [0, 0, 1, 64]])
    assert size_bucket(boxes).tolist() == [0, 1, 1, 2, 3]


def test_a_looser_pool_matches_a_box_the_voc_match_misses():
    gt = np.array([[0, 0, 10, 10]], float)
    square_ish = np.array([[0, 0, 10, 4]], float)  # IoU 0.4: no VOC match, a match at 0.3
    voc, loose = Accumulator(), Accumulator(iou_threshold=0.3)
    for pool in (voc, loose):
        pool.add(square_ish, [0.9], gt, kept=np.array([True]))
    assert (voc.scores(None).tp, voc.scores(None).fp) == (0, 1)
    assert (loose.scores(None).tp, loose.scores(None).fp, loose.scores(0.5).recall) == (1, 0, 1.0)
    assert loose.scores(0.5).ap50 == pytest.approx(1.0) and voc.scores(0.5).ap50 == 0.0
