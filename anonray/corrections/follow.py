"""A region drawn on one frame, carried across its frame range (``add_region`` with ``follow: true``).

What the box covers on the range's first frame is followed by normalised cross-correlation (OpenCV's
``matchTemplate``) on the source's frames, decoded grey at most TRACK_SIDE pixels on the long side, in a window
around the last position, against the first frame's patch and the last frame's (so slow changes of look are
followed without drifting from the original). Deterministic: the same region lands in the same place on every
apply. Where no match reaches MIN_MATCH the last box is kept. The box keeps its size. No Ray here.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from anonray.decode.segment import decode_segment
from anonray.handoff import VideoDetections

TRACK_SIDE = 640
"""Frames are followed at most this large on their long side (the boxes are scaled back to stored pixels)."""
MIN_MATCH = 0.5
"""The normalised correlation a match needs; below it the target counts as lost and the last box stays."""
SEARCH_MARGIN = 1.0
"""The search window reaches this many box sizes beyond the last box on each side."""


def followed_boxes(source: Path, video: VideoDetections, box: tuple[float, float, float, float],
                   frames: tuple[int, int]) -> np.ndarray:
    """One xyxy box (stored-frame pixels) per frame of ``frames`` (inclusive), starting from ``box``."""
    info = video.info
    first, last = frames
    scale = min(1.0, TRACK_SIDE / max(info.width, info.height))
    size = (max(2, round(info.width * scale)), max(2, round(info.height * scale)))
    x0, y0, x1, y1 = (v * scale for v in box)
    w, h = max(1, round(x1 - x0)), max(1, round(y1 - y0))
    current = np.array([x0, y0, x1, y1], np.float64)
    templates: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    for stats in video.segments:
        segment = stats.segment
        if segment.first_frame_index + segment.frame_count <= first or segment.first_frame_index > last:
            continue
        for index, _, image in decode_segment(source, info, segment, size, "gray"):
            if index < first or index > last:
                continue
            if index == first:
                templates = [_patch(image, round(x0), round(y0), w, h)]
            else:
                found = _best_match(image, templates, current, w, h)
                if found is not None:  # at least half the box stays on the frame
                    found = (min(max(found[0], -w // 2), size[0] - w // 2),
                             min(max(found[1], -h // 2), size[1] - h // 2))
                    current = np.array([found[0], found[1], found[0] + w, found[1] + h], np.float64)
                    templates = [templates[0], _patch(image, found[0], found[1], w, h)]
            boxes.append(current.copy())
    return np.asarray(boxes, np.float32).reshape(-1, 4) / scale


def _patch(image: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The w x h patch at (x, y), padded by edge replication where the box runs past the frame."""
    padded = cv2.copyMakeBorder(image, h, h, w, w, cv2.BORDER_REPLICATE)
    return padded[y + h:y + 2 * h, x + w:x + 2 * w].copy()


def _best_match(image: np.ndarray, templates: list[np.ndarray], current: np.ndarray, w: int,
                h: int) -> tuple[int, int] | None:
    """The top-left corner of the best match of any template in a window around ``current``, or None below
    MIN_MATCH (a flat template matches nothing)."""
    mx, my = round(SEARCH_MARGIN * w), round(SEARCH_MARGIN * h)
    left, top = round(current[0]) - mx, round(current[1]) - my
    window = _patch(image, left, top, w + 2 * mx, h + 2 * my)
    best, where = MIN_MATCH, None
    for template in templates:
        if float(template.std()) < 1.0:
            continue
        scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
        _, peak, _, (px, py) = cv2.minMaxLoc(scores)
        if peak >= best:
            best, where = peak, (left + px, top + py)
    return where
