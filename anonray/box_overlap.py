"""How axis-aligned boxes (xyxy) overlap, pairwise: the one intersection the tracker, the detectors and the
corrections build their measures (IoU, the share of a box inside another) on."""

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
