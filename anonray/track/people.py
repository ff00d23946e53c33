"""Where people stand: person detections (``detection.person``) as context for the face tracker.

A face track is supported when its detections sit at the head end of a person box on the person-detection
frames around them, both boxes turned upright (the video's display rotation) first. The face tracker asks for
support only of tracks whose best score stays below ``tracking.face.alone_track_threshold`` (tracker.py).
Pure numpy; the geometry was measured on the labelled real footage (models/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anonray.decode.orientation import boxes_to_display
from anonray.types import PERSON_CLASS, Detections

HEAD_END = 0.22
"""The head end of a person box: its top this share of the box height (a little above it too, SLACK)."""
SLACK = 0.15
"""How far (a share of the person box) a face centre may lie outside its sides or above its top."""
SUPPORTED_SHARE = 0.3
"""A track is supported when at least this share of its detections is."""


@dataclass(frozen=True)
class PeopleSeen:
    """Person boxes by frame in display (upright) pixels, the stride their detector ran at (frames 0, stride,
    2*stride, ...) and how to turn a stored-frame box upright (``rotation`` of a ``stored_size`` frame)."""

    boxes_by_frame: dict[int, np.ndarray]
    stride: int
    rotation: int = 0
    stored_size: tuple[int, int] = (0, 0)

    @classmethod
    def from_detections(cls, dets: Detections, stride: int, rotation: int = 0,
                        stored_size: tuple[int, int] = (0, 0)) -> PeopleSeen:
        """The PERSON_CLASS rows of ``dets`` (stored-frame pixels, as detections travel)."""
        people = dets.select(dets.cls == PERSON_CLASS)
        if not len(people):
            return cls({}, max(1, stride), rotation, stored_size)
        order = np.argsort(people.frame_index, kind="stable")
        frames, starts = np.unique(people.frame_index[order], return_index=True)
        upright = boxes_to_display(people.xyxy[order], rotation, *stored_size)
        return cls({int(f): b for f, b in zip(frames, np.split(upright, starts[1:]), strict=True)},
                   max(1, stride), rotation, stored_size)

    def near(self, frame: int) -> np.ndarray:
        """Person boxes (n, 4) of the person-detection frames just before and after ``frame``."""
        before = frame - frame % self.stride
        parts = [self.boxes_by_frame.get(f) for f in (before, before + self.stride)]
        parts = [p for p in parts if p is not None]
        return np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)

    def supports(self, frame: int, box: np.ndarray) -> bool:
        """Whether a face box (stored-frame pixels) has its centre at the head end of a person seen around
        ``frame``."""
        people = self.near(frame)
        if not len(people):
            return False
        box = boxes_to_display(np.asarray(box, np.float32).reshape(1, 4), self.rotation, *self.stored_size)[0]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        w, h = people[:, 2] - people[:, 0], people[:, 3] - people[:, 1]
        inside = ((cx >= people[:, 0] - SLACK * w) & (cx <= people[:, 2] + SLACK * w)
                  & (cy >= people[:, 1] - SLACK * h) & (cy <= people[:, 1] + HEAD_END * h))
        return bool(inside.any())

    def supports_track(self, frames: list[int], boxes: list[np.ndarray]) -> bool:
        """Whether at least SUPPORTED_SHARE of a track's detections are supported."""
        hits = sum(self.supports(f, b) for f, b in zip(frames, boxes, strict=True))
        return hits >= SUPPORTED_SHARE * len(frames)
