"""Zones of a camera (config ``zones``): areas masked on every frame, and areas where still tracks are not masked.

A zone applies to the files of its input folder and its subfolders. ``always_mask`` adds a box region of class
``zone`` on every frame; ``never_mask`` drops a track whose every box centre lies inside the zone and which
stays still there (a face on a poster, a plate on a parked trailer's advert), while a person walking in front
of it moves and is still masked. No Ray here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np

from anonray.config import ZoneConfig
from anonray.types import REGION_CLASS_NAMES, SHAPE_BOX, MaskPlan

ZONE_CLASS = REGION_CLASS_NAMES.index("zone")
ZONE_TRACK_BASE = 1_000_000
"""Track ids of always_mask zones: ZONE_TRACK_BASE + the zone's place in the config (detector tracks count up
from 0, regions drawn by a reviewer down from -1)."""
STILL_SPREAD = 0.25
"""A track is still when its box centres spread (max - min, each axis) at most this share of its median box
side, or at most STILL_ZONE_SHARE of the zone's shorter side: detector jitter on a poster, or a tracker hopping
between the figures of a crest (measured on street_faces_1080p: false face tracks on its crest spread 23-67 px
at 22-26 px boxes, in a zone of 250 x 184 px), not a person walking across the zone."""
STILL_ZONE_SHARE = 0.5


def zones_for(zones: Sequence[ZoneConfig], relative_path: str) -> list[ZoneConfig]:
    """The zones whose folder holds the file (directly or in a subfolder)."""
    parent = PurePosixPath(relative_path).parent.as_posix()
    return [z for z in zones if z.folder == "." or parent == z.folder or parent.startswith(z.folder + "/")]


def zone_pixels(zone: ZoneConfig, width: int, height: int) -> np.ndarray:
    x0, y0, x1, y1 = zone.box
    return np.array([x0 * width, y0 * height, x1 * width, y1 * height], np.float32)


def is_still_inside(boxes: np.ndarray, zone: ZoneConfig, width: int, height: int) -> bool:
    """Whether a track (its xyxy boxes, source pixels) stays inside a never_mask zone and still."""
    if not len(boxes):
        return False
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    zx0, zy0, zx1, zy1 = zone_pixels(zone, width, height)
    inside = bool(((cx >= zx0) & (cx <= zx1) & (cy >= zy0) & (cy <= zy1)).all())
    side = float(np.median(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    spread = max(float(np.ptp(cx)), float(np.ptp(cy)))
    allowed = max(STILL_SPREAD * max(side, 1.0), STILL_ZONE_SHARE * float(min(zx1 - zx0, zy1 - zy0)))
    return inside and spread <= allowed


def dropped_by_zones(boxes: np.ndarray, zones: Sequence[ZoneConfig], width: int, height: int) -> bool:
    """Whether any never_mask zone drops the track."""
    return any(z.action == "never_mask" and is_still_inside(boxes, z, width, height) for z in zones)


def with_always_mask(plan: MaskPlan, zones: Sequence[ZoneConfig], width: int, height: int) -> MaskPlan:
    """The plan with a box of class ``zone`` on every frame for each always_mask zone."""
    always = [(k, z) for k, z in enumerate(zones) if z.action == "always_mask"]
    if not always or plan.frame_count <= 0:
        return plan
    n = plan.frame_count
    frames = np.tile(np.arange(n, dtype=np.int64), len(always))
    boxes = np.concatenate([np.tile(zone_pixels(z, width, height), (n, 1)) for _, z in always])
    ids = np.repeat(np.array([ZONE_TRACK_BASE + k for k, _ in always], np.int64), n)
    return MaskPlan(n, np.concatenate([plan.frame_index, frames]),
                    np.concatenate([plan.xyxy.reshape(-1, 4).astype(np.float32), boxes]),
                    np.concatenate([plan.cls, np.full(len(frames), ZONE_CLASS, np.int64)]),
                    np.concatenate([plan.shape, np.full(len(frames), SHAPE_BOX, np.int64)]),
                    np.concatenate([plan.track_id, ids]))
