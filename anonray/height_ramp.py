"""A value that ramps with box height: the size-dependent score thresholds of detection and tracking."""

from __future__ import annotations

import numpy as np


def ramp_by_height(heights: np.ndarray, small_value: float, large_value: float, small_height: float,
                   large_height: float) -> np.ndarray:
    """Per height (px): ``small_value`` up to ``small_height``, ``large_value`` from ``large_height``, linear
    between (a step at ``large_height`` when the two heights are equal)."""
    heights = np.asarray(heights, np.float32)
    if large_height == small_height:
        ramp = (heights >= large_height).astype(np.float32)
    else:
        ramp = np.clip((heights - small_height) / (large_height - small_height), 0.0, 1.0)
    return (small_value + (large_value - small_value) * ramp).astype(np.float32)
