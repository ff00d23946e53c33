"""Scoring detections against labelled boxes (pure numpy; shared by the stills and video scorers).

PASCAL VOC style: per image, detections in descending score order each take the unmatched non-ignored label
they overlap most at IoU >= 0.5 (ties: the first label); a detection matching only an ignore label
(``ignore: true``) is dropped, and ignore labels are never misses; AP50 is the all-point interpolated area,
pooled over a dataset; size buckets go by label box height (<16, 16-32, 32-64, >=64), other buckets' labels
counting as ignore labels for AP. The conventions in full: benchmarks/accuracy/README.md, "Stills".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLD = 0.5
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<16", 0.0, 16.0),
    ("16-32", 16.0, 32.0),
    ("32-64", 32.0, 64.0),
    (">=64", 64.0, float("inf")),
)
"""(name, low inclusive, high exclusive) on the label box height in pixels."""

TP, FP, IGNORED = 1, 0, -1


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4) against every box in b (m, 4), xyxy; (n, m)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_image(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_ignore: np.ndarray | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching in one image.

    Returns (outcome per detection: TP=1, FP=0, IGNORED=-1, in the input order;
    matched per label: bool, False for ignore labels).
    """
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    ignore = np.zeros(len(gt_boxes), bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    outcome = np.full(len(det_boxes), FP, np.int8)
    matched = np.zeros(len(gt_boxes), bool)
    if not len(det_boxes) or not len(gt_boxes):
        return outcome, matched
    iou = iou_matrix(det_boxes, gt_boxes)
    counted = ~ignore
    for d in np.argsort(-det_scores, kind="stable"):
        cand = np.where(counted & ~matched, iou[d], -1.0)
        g = int(np.argmax(cand))
        if cand[g] >= iou_threshold:
            matched[g] = True
            outcome[d] = TP
        elif ignore.any() and iou[d][ignore].max() >= iou_threshold:
            outcome[d] = IGNORED
    return outcome, matched


def average_precision(scores: np.ndarray, outcome: np.ndarray, n_labels: int) -> float:
    """All-point interpolated AP from pooled detections (outcome TP/FP/IGNORED) over n_labels labels.

    NaN when there are no labels.
    """
    if n_labels == 0:
        return float("nan")
    scores = np.asarray(scores, np.float64)
    outcome = np.asarray(outcome)
    keep = outcome != IGNORED
    scores, tp = scores[keep], outcome[keep] == TP
    if not len(scores):
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / n_labels
    precision = ctp / np.maximum(ctp + cfp, 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@dataclass
class Scores:
    """Recall/precision at a threshold and AP50 for one pool of images."""

    n_labels: int
    ap50: float
    recall: float
    precision: float
    tp: int
    fp: int

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in self.__dict__.items()}


@dataclass
class Accumulator:
    """Pools per-image matches of one class; ``scores(threshold)`` summarises them.

    Feed it detections at a low score threshold (so AP sees the whole curve); recall and precision
    are then read at the operating threshold from the same pooled outcomes. That is exact: matching is
    greedy in score order, so detections below a cut-off never change the outcome of those above it
    (and the detectors' NMS is greedy in score order too, so their boxes above it are the same).
    """

    iou_threshold: float = IOU_THRESHOLD
    """The IoU a detection needs with a label to match it (0.5, VOC; stills.py adds a looser 0.3 pool)."""
    scores_: list[np.ndarray] = field(default_factory=list)
    outcome_: list[np.ndarray] = field(default_factory=list)
    kept_outcome_: list[np.ndarray] = field(default_factory=list)
    n_labels: int = 0

    def add(self, det_boxes, det_scores, gt_boxes, gt_ignore=None, kept=None) -> np.ndarray:
        """Adds one image; returns the per-label matched flags.

        ``kept``: which detections the operating point keeps when that is not a plain score cut (a
        threshold that depends on box size); they are matched again on their own, so the operating
        point is exact, and ``scores(None)`` reads it.
        """
        outcome, matched = match_image(det_boxes, det_scores, gt_boxes, gt_ignore, self.iou_threshold)
        ignore = np.zeros(len(matched), bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
        self.scores_.append(np.asarray(det_scores, np.float64).reshape(-1))
        self.outcome_.append(outcome)
        if kept is not None:
            kept = np.asarray(kept, bool)
            self.kept_outcome_.append(match_image(np.asarray(det_boxes).reshape(-1, 4)[kept],
                                                  np.asarray(det_scores).reshape(-1)[kept], gt_boxes, gt_ignore,
                                                  self.iou_threshold)[0])
        self.n_labels += int((~ignore).sum())
        return matched

    def scores(self, threshold: float | None) -> Scores:
        """AP50 over the whole curve; recall and precision at ``threshold`` (None: the ``kept`` sets)."""
        s = np.concatenate(self.scores_) if self.scores_ else np.zeros(0)
        o = np.concatenate(self.outcome_) if self.outcome_ else np.zeros(0, np.int8)
        if threshold is None:
            at = np.concatenate(self.kept_outcome_) if self.kept_outcome_ else np.zeros(0, np.int8)
        else:
            at = o[s >= threshold]
        tp, fp = int((at == TP).sum()), int((at == FP).sum())
        return Scores(
            n_labels=self.n_labels,
            ap50=average_precision(s, o, self.n_labels),
            recall=tp / self.n_labels if self.n_labels else float("nan"),
            precision=tp / (tp + fp) if tp + fp else float("nan"),
            tp=tp,
            fp=fp,
        )


def size_bucket(gt_boxes: np.ndarray) -> np.ndarray:
    """Bucket index (into SIZE_BUCKETS) of each label by its box height."""
    h = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    h = h[:, 3] - h[:, 1]
    edges = np.array([b[2] for b in SIZE_BUCKETS[:-1]])
    return np.searchsorted(edges, h, side="right")
