"""Count-based mask measures: mask blobs, false masks, fragments per object (issue 14).

A blob is an 8-connected area of masked pixels of at least ``MIN_BLOB_PX`` pixels. It is a *hit* when at
least half of its pixels lie inside a labelled face, head or plate box grown ``GROW`` times about its
centre, else a *false mask*. Each hit is credited to the object whose grown box holds most of its pixels,
so ``fragments`` counts how many blobs one masked object was split into. Pure numpy and OpenCV.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

MIN_BLOB_PX = 4
GROW = 1.5
HIT_SHARE = 0.5
COVERED = 0.6
FACE_HEIGHTS = (("<16", 0, 16), ("16-32", 16, 32), ("32-64", 32, 64), (">=64", 64, 10**9))
SMALL_PLATE_PX = 12


def grow_box(box, factor: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A box scaled ``factor`` times about its centre, as integer pixel bounds clipped to the frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return (max(0, int(np.floor(cx - hw))), max(0, int(np.floor(cy - hh))),
            min(width, int(np.ceil(cx + hw))), min(height, int(np.ceil(cy + hh))))


def find_blobs(masked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label image (int32, 0 = background) and the ids of the blobs of at least MIN_BLOB_PX pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(masked.astype(np.uint8), connectivity=8)
    ids = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= MIN_BLOB_PX)
    return labels, ids[ids > 0]


def count_blobs(masked: np.ndarray) -> int:
    """Blobs in a frame (no labels needed: every frame of a clip)."""
    return len(find_blobs(masked)[1])


@dataclass
class BlobCounts:
    """Counts over labelled frames (add frames with ``add_frame``)."""

    frames: int = 0
    blobs: int = 0
    hits: int = 0
    masked_objects: int = 0
    """Labelled objects credited with at least one hit blob."""
    object_blobs: int = 0
    """Hit blobs credited to those objects (fragments = object_blobs / masked_objects)."""
    faces: dict[str, list[int]] = field(default_factory=lambda: {b[0]: [0, 0] for b in FACE_HEIGHTS})
    """Per face height bucket: [labelled, covered >= COVERED]."""
    plates: list[int] = field(default_factory=lambda: [0, 0])
    plates_small: list[int] = field(default_factory=lambda: [0, 0])
    """Plates under SMALL_PLATE_PX tall (not in the plate recall target)."""
    collateral_pixels: int = 0
    background_pixels: int = 0

    @property
    def false_masks(self) -> int:
        return self.blobs - self.hits

    @property
    def precision(self) -> float:
        return self.hits / self.blobs if self.blobs else float("nan")

    @property
    def false_per_frame(self) -> float:
        return self.false_masks / self.frames if self.frames else float("nan")

    @property
    def fragments(self) -> float:
        return self.object_blobs / self.masked_objects if self.masked_objects else float("nan")

    @property
    def face_recall(self) -> float:
        n = sum(v[0] for v in self.faces.values())
        return sum(v[1] for v in self.faces.values()) / n if n else float("nan")

    @property
    def plate_recall(self) -> float:
        return self.plates[1] / self.plates[0] if self.plates[0] else float("nan")

    @property
    def collateral(self) -> float:
        return self.collateral_pixels / self.background_pixels if self.background_pixels else float("nan")

    def add(self, other: BlobCounts) -> None:
        for name in ("frames", "blobs", "hits", "masked_objects", "object_blobs", "collateral_pixels",
                     "background_pixels"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k, v in other.faces.items():
            self.faces[k] = [a + b for a, b in zip(self.faces[k], v, strict=True)]
        self.plates = [a + b for a, b in zip(self.plates, other.plates, strict=True)]
        self.plates_small = [a + b for a, b in zip(self.plates_small, other.plates_small, strict=True)]

    def as_dict(self) -> dict:
        return {**asdict(self), "false_masks": self.false_masks, "precision": self.precision,
                "false_per_frame": self.false_per_frame, "fragments": self.fragments,
                "face_recall": self.face_recall, "plate_recall": self.plate_recall, "collateral": self.collateral}


def _covered(masked: np.ndarray, eligible: np.ndarray | None, box) -> bool | None:
    """Whether at least COVERED of the box's eligible pixels are masked; None for a box with no pixel in the
    frame (not counted, as score.py skips it)."""
    h, w = masked.shape
    x0, y0, x1, y1 = grow_box(box, 1.0, w, h)
    if x1 <= x0 or y1 <= y0:
        return None
    region = masked[y0:y1, x0:x1]
    ok = eligible[y0:y1, x0:x1] if eligible is not None else np.ones_like(region, bool)
    return bool(region[ok].mean() >= COVERED) if ok.any() else True


def score_labelled_frame(masked: np.ndarray, objects: list[dict], counts: BlobCounts,
                         eligible: np.ndarray | None = None) -> None:
    """Add one labelled frame: ``objects`` are ``{"cls": "face"|"head"|"plate", "box": [...], "ignore"?}``.

    Every object (ignore included) makes its grown box a fair place for a mask; only faces and plates that
    are not ignored count for recall. ``eligible``: pixels that could show the mask at all.
    """
    h, w = masked.shape
    labels, ids = find_blobs(masked)
    counts.frames += 1
    counts.blobs += len(ids)
    grown = [grow_box(o["box"], GROW, w, h) for o in objects]
    inside_any = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in grown:
        inside_any[y0:y1, x0:x1] = True
    outside = np.ones((h, w), bool)
    for o in objects:
        x0, y0, x1, y1 = grow_box(o["box"], 1.0, w, h)
        outside[y0:y1, x0:x1] = False
    counts.collateral_pixels += int(masked[outside].sum())
    counts.background_pixels += int(outside.sum())
    if len(ids):
        area = np.bincount(labels.ravel(), minlength=labels.max() + 1)
        inside = np.bincount(labels[inside_any], minlength=labels.max() + 1)
        hit_ids = [i for i in ids if inside[i] >= HIT_SHARE * area[i]]
        counts.hits += len(hit_ids)
        credited: dict[int, int] = {}
        for i in hit_ids:
            share = [int((labels[y0:y1, x0:x1] == i).sum()) for x0, y0, x1, y1 in grown]
            best = int(np.argmax(share))
            credited[best] = credited.get(best, 0) + 1
        counts.masked_objects += len(credited)
        counts.object_blobs += sum(credited.values())
    for o in objects:
        if o.get("ignore") or o["cls"] == "head":
            continue
        height = float(o["box"][3]) - float(o["box"][1])
        covered = _covered(masked, eligible, o["box"])
        if covered is None:
            continue
        if o["cls"] == "face":
            bucket = next(b[0] for b in FACE_HEIGHTS if b[1] <= height < b[2])
            counts.faces[bucket][0] += 1
            counts.faces[bucket][1] += covered
        else:
            target = counts.plates if height >= SMALL_PLATE_PX else counts.plates_small
            target[0] += 1
            target[1] += covered
