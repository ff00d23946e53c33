"""A second look at each frame, shrunk: close-up plates that fill a large part of the main look's input.

The plate network finds plates well while they stay under about 100 px tall in its input; a plate filling a
frame (a camera close behind a car, an evidence photo of a plate) goes unseen at 1280 px but is found when the
frame is shrunk to 320-480 px (models/README.md, "Close-up plates"). The shrunk look also sees false plates of
its own, small ones above all, so only its boxes that are large at the main look's scale and scored well join
the main look's boxes (overlaps merged by NMS).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anonray.box_overlap import box_areas, intersection_areas
from anonray.detect.low_light import merge
from anonray.detect.plates import Boxes, PlateDetector


class CoarseLook:
    """The main plate detector and the same network at a small input as one detector."""

    def __init__(self, main: PlateDetector, coarse: PlateDetector, min_height: float, threshold: float,
                 iou: float, max_frame_share: float = 1.0) -> None:
        """min_height: a coarse box's height in the main look's network input (px) from which it is kept;
        threshold: the score from which it is kept; iou: the NMS overlap that merges two boxes into one;
        max_frame_share: the share of the frame's area from which a box is dropped (it boxes the picture)."""
        self.main = main
        self.coarse = coarse
        self.min_height = min_height
        self.threshold = threshold
        self.iou = iou
        self.max_frame_share = max_frame_share

    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        found = self.main.detect(images)
        shrunk = self.coarse.detect(images)
        return [merge(boxes, self._unseen(image, boxes[0], extra), self.iou)
                for image, boxes, extra in zip(images, found, shrunk, strict=True)]

    def _unseen(self, image: np.ndarray, seen: np.ndarray, boxes: Boxes) -> Boxes:
        """The coarse boxes the main look would see at least ``min_height`` tall, scored at ``threshold``, under
        ``max_frame_share`` of the frame, that hold no smaller box of the main look (``seen``, under ``min_height``
        there) half inside them: such a plate is the main look's, and keeps its tighter box (the shrunk look's are
        looser). A large main box inside may be a piece of a close-up plate: the coarse box then joins it."""
        xyxy, score = boxes
        scale = self.main.network_size(image) / max(image.shape[:2])
        keep = (score >= self.threshold) & ((xyxy[:, 3] - xyxy[:, 1]) * scale >= self.min_height)
        keep &= box_areas(xyxy) < self.max_frame_share * image.shape[0] * image.shape[1]
        small = seen[(seen[:, 3] - seen[:, 1]) * scale < self.min_height]
        if len(small) and keep.any():
            keep &= contained_share(small, xyxy).max(axis=0) < 0.5
        return xyxy[keep], score[keep]


def contained_share(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """(len(inner), len(outer)): the share of each ``inner`` box's area that lies inside each ``outer`` box."""
    return intersection_areas(inner, outer) / np.maximum(box_areas(inner), 1e-6)[:, None]
