"""Non-maximum suppression without torch: OpenCV's, with torchvision.ops.nms's semantics (the CPU path)."""

from __future__ import annotations

import cv2
import numpy as np


def nms(xyxy: np.ndarray, score: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept, highest score first (ties in index order), as ``torchvision.ops.nms``
    keeps them: a box goes when its IoU with a higher-scoring kept box exceeds ``iou``. A box without area
    is always kept and suppresses nothing (its IoU in torchvision is 0 or NaN; OpenCV would call two such
    boxes identical), so only boxes with area go through OpenCV."""
    box = np.asarray(xyxy, np.float64).reshape(-1, 4)
    n = len(box)
    order = np.argsort(-np.asarray(score, np.float32), kind="stable")
    rank = np.empty(n, np.float32)  # OpenCV sorts by these: our order exactly, and all above its threshold 0
    rank[order] = np.arange(n, 0, -1)
    wh = box[:, 2:] - box[:, :2]
    solid = np.flatnonzero((wh > 0).all(axis=1))
    rects = np.concatenate([box[solid, :2], wh[solid]], axis=1)
    kept = cv2.dnn.NMSBoxes(rects, rank[solid], 0.0, float(iou)) if len(solid) else ()
    keep = np.ones(n, bool)
    keep[solid] = False
    keep[solid[np.asarray(kept, np.int64).reshape(-1)]] = True
    return order[keep[order]]


def batched_nms(xyxy: np.ndarray, score: np.ndarray, group: np.ndarray, iou: float) -> np.ndarray:
    """``torchvision.ops.batched_nms``: NMS within each group (an image, a class) on its own; the indices
    kept, highest score first."""
    kept = [idx[nms(xyxy[idx], score[idx], iou)] for g in np.unique(group) for idx in [np.flatnonzero(group == g)]]
    if not kept:
        return np.zeros(0, np.int64)
    kept_all = np.concatenate(kept)
    return kept_all[np.argsort(-np.asarray(score, np.float32)[kept_all], kind="stable")]
