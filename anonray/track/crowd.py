"""Face tracks confirmed by the confirmed faces around them: in a crowd, and as fragments of one face.

In a crowd seen from afar the faces are small and the detector scores many of them as low as it scores
texture (0.05-0.15); no person box stands under most of them (bodies hide each other). Their neighbours are the
evidence: a face track that was not confirmed by its own scores or by a person (tracker.py) is confirmed when,
on enough of its detections, several confirmed face tracks of about its height sit beside it, on about its
line (a row of heads). Only tracks confirmed on their own count as neighbours, so support never spreads from
one crowd-confirmed track to the next. A track that lies on a confirmed face for a good share of its detections
(the detector's box jumped in size and the tracker split one face in two) is that face: it is confirmed too.
Pure numpy; measured in models/README.md, "Faces in a crowd, and fragments of a face".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anonray.box_overlap import iou_matrix

HEIGHT_RATIO = 1.5
"""A neighbour's height lies within this factor of the track's (either way)."""
NEAR_FRAMES = 1
"""A fragment's box is compared with the confirmed faces of its own frame and this many frames either side."""


@dataclass(frozen=True)
class CrowdRule:
    """What makes a crowd (tracking.face.crowd_*): ``neighbours`` confirmed faces within ``reach`` face heights
    sideways and ``rise`` face heights up or down, on ``share`` of a track's detections, for a track of at
    least ``min_hits`` detections."""

    neighbours: int
    reach: float
    rise: float
    share: float
    min_hits: int


class ConfirmedFaces:
    """The detections of the confirmed face tracks, by frame: boxes (n, 4) and which track each is."""

    def __init__(self, frames: Sequence[Sequence[int]], boxes: Sequence[Sequence[np.ndarray]]) -> None:
        """``frames[i]``, ``boxes[i]``: the detections of confirmed track i."""
        by_frame: dict[int, list[tuple[int, np.ndarray]]] = {}
        for track, (track_frames, track_boxes) in enumerate(zip(frames, boxes, strict=True)):
            for frame, box in zip(track_frames, track_boxes, strict=True):
                by_frame.setdefault(int(frame), []).append((track, box))
        self._boxes = {f: np.array([b for _, b in rows], np.float32).reshape(-1, 4) for f, rows in by_frame.items()}
        self._tracks = {f: np.array([t for t, _ in rows]) for f, rows in by_frame.items()}

    def neighbours(self, frame: int, box: np.ndarray, rule: CrowdRule) -> int:
        """How many confirmed tracks have a face of about ``box``'s height beside it on ``frame``."""
        others = self._boxes.get(int(frame))
        if others is None:
            return 0
        height = float(box[3] - box[1])
        heights = others[:, 3] - others[:, 1]
        dx = np.abs((others[:, 0] + others[:, 2]) - (box[0] + box[2])) / 2
        dy = np.abs((others[:, 1] + others[:, 3]) - (box[1] + box[3])) / 2
        near = ((heights <= HEIGHT_RATIO * height) & (heights * HEIGHT_RATIO >= height)
                & (dx <= rule.reach * height) & (dy <= rule.rise * height) & (dx + dy > 0.5 * height))
        return len(np.unique(self._tracks[int(frame)][near]))

    def overlap_share(self, frames: Sequence[int], boxes: Sequence[np.ndarray], min_iou: float) -> float:
        """The share of a track's detections whose box overlaps a confirmed face at ``min_iou`` or more, on its
        frame or NEAR_FRAMES either side."""
        hits = 0
        for frame, box in zip(frames, boxes, strict=True):
            near = [self._boxes[f] for f in range(int(frame) - NEAR_FRAMES, int(frame) + NEAR_FRAMES + 1)
                    if f in self._boxes]
            if near:
                one = np.asarray(box, np.float32).reshape(1, 4)
                hits += bool((iou_matrix(one, np.concatenate(near))[0] >= min_iou).any())
        return hits / max(len(frames), 1)

    def supports_track(self, frames: Sequence[int], boxes: Sequence[np.ndarray], rule: CrowdRule) -> bool:
        """Whether a track of ``rule.min_hits`` detections or more sits in a crowd on ``rule.share`` of them."""
        if len(frames) < rule.min_hits:
            return False
        hits = sum(self.neighbours(f, b, rule) >= rule.neighbours for f, b in zip(frames, boxes, strict=True))
        return hits >= rule.share * len(frames)
