"""How axis-aligned boxes (xyxy) overlap, pairwise: the one intersection and IoU the tracker, the crowd rule, the
detectors and the corrections build their measures (IoU, the share of a box inside another) on."""

from __future__ import annotations

import numpy as np


def box_areas(xyxy: np.ndarray) -> np.ndarray:
    """The area of each box of ``xyxy`` (n, 4)."""
    return (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])


def intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)): the area each box of ``a`` shares with each box of ``b`` (0 where they do not meet)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (n,4) and b (m,4), xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    inter = intersection_areas(a, b)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
