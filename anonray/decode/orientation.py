"""Display orientation: detectors see frames upright; masks are planned in stored-frame pixels.

PyAV reports ``rotation`` in degrees counter-clockwise; turning the stored image by that angle gives
what a player shows. Detection runs on the upright image and boxes are mapped back here.
"""

from __future__ import annotations

import numpy as np


def quarter_turns(rotation: int) -> int:
    """Counter-clockwise quarter turns (0..3) for a rotation in degrees (multiples of 90 only)."""
    return (round(rotation / 90)) % 4


def to_display(image: np.ndarray, rotation: int) -> np.ndarray:
    """The stored image (H, W, C) turned upright as a player would show it."""
    k = quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) of the upright picture for a stored width x height."""
    return (height, width) if quarter_turns(rotation) % 2 else (width, height)


def boxes_to_stored(xyxy: np.ndarray, rotation: int, stored_width: int, stored_height: int) -> np.ndarray:
    """Map xyxy boxes from upright (display) pixels back to stored-frame pixels."""
    k = quarter_turns(rotation)
    if k == 0 or len(xyxy) == 0:
        return xyxy
    x1, y1, x2, y2 = (xyxy[:, i] for i in range(4))
    w, h = stored_width, stored_height
    if k == 1:
        xs = (w - y2, w - y1)
        ys = (x1, x2)
    elif k == 2:
        xs = (w - x2, w - x1)
        ys = (h - y2, h - y1)
    else:
        xs = (y1, y2)
        ys = (h - x2, h - x1)
    return np.stack([xs[0], ys[0], xs[1], ys[1]], 1).astype(xyxy.dtype)


def boxes_to_display(xyxy: np.ndarray, rotation: int, stored_width: int, stored_height: int) -> np.ndarray:
    """Map xyxy boxes from stored-frame pixels to upright (display) pixels: the inverse of ``boxes_to_stored``,
    which is the opposite turn taken on the upright frame's size."""
    return boxes_to_stored(xyxy, -rotation, *display_size(stored_width, stored_height, rotation))
