"""A region drawn on one frame, carried across its frame range by a tracker (``add_region`` with ``follow: true``).

OpenCV's MIL tracker (in opencv-python, no model file) follows what the box covers on the source's frames,
decoded at most TRACK_SIDE pixels on the long side; where it loses the target, the last box is kept. The box
keeps its size. No Ray here.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from anonray.decode.segment import decode_segment
from anonray.handoff import VideoDetections

TRACK_SIDE = 640
"""Frames are tracked at most this large on their long side (the boxes are scaled back to stored pixels)."""


def followed_boxes(source: Path, video: VideoDetections, box: tuple[float, float, float, float],
                   frames: tuple[int, int]) -> np.ndarray:
    """One xyxy box (stored-frame pixels) per frame of ``frames`` (inclusive), starting from ``box``."""
    info = video.info
    first, last = frames
    scale = min(1.0, TRACK_SIDE / max(info.width, info.height))
    size = (max(2, round(info.width * scale)), max(2, round(info.height * scale)))
    x0, y0, x1, y1 = (v * scale for v in box)
    tracker = cv2.TrackerMIL_create()
    current = np.array([x0, y0, x1, y1], np.float64)
    boxes: list[np.ndarray] = []
    for stats in video.segments:
        segment = stats.segment
        if segment.first_frame_index + segment.frame_count <= first or segment.first_frame_index > last:
            continue
        for index, _, image in decode_segment(source, info, segment, size, "bgr24"):
            if index < first or index > last:
                continue
            if index == first:
                tracker.init(image, (round(x0), round(y0), max(1, round(x1 - x0)), max(1, round(y1 - y0))))
            else:
                found, (x, y, w, h) = tracker.update(image)
                if found:
                    current = np.array([x, y, x + w, y + h], np.float64)
            boxes.append(current.copy())
    return np.asarray(boxes, np.float32).reshape(-1, 4) / scale
