"""A video's mask plan edited by a reviewer's corrections: tracks removed, regions added. Pure numpy, no Ray."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from anonray.corrections.spec import Correction
from anonray.types import REGION_CLASS_NAMES, SHAPE_BOX, SHAPE_ELLIPSE, MaskPlan

SHAPE_IDS = {"box": SHAPE_BOX, "ellipse": SHAPE_ELLIPSE}


def track_frames(plan: MaskPlan, class_name: str, track_id: int) -> np.ndarray:
    """The frame indices on which a track (class and id) has a region, sorted; empty when it has none."""
    rows = (plan.cls == REGION_CLASS_NAMES.index(class_name)) & (plan.track_id == track_id)
    return np.unique(plan.frame_index[rows])


def _select(plan: MaskPlan, keep: np.ndarray) -> MaskPlan:
    return MaskPlan(plan.frame_count, plan.frame_index[keep], plan.xyxy[keep], plan.cls[keep], plan.shape[keep],
                    plan.track_id[keep])


def remove_track(plan: MaskPlan, correction: Correction) -> MaskPlan:
    """The plan without the track's regions (on ``correction.frames`` only, when given)."""
    cls_id = REGION_CLASS_NAMES.index(str(correction.class_name))
    hit = (plan.cls == cls_id) & (plan.track_id == correction.track_id)
    if correction.frames is not None:
        first, last = correction.frames
        hit &= (plan.frame_index >= first) & (plan.frame_index <= last)
    return _select(plan, ~hit)


def next_manual_track_id(plan: MaskPlan) -> int:
    """Regions drawn by hand get negative track ids (detector tracks count up from 0): the next one free."""
    return int(min(0, plan.track_id.min(initial=0))) - 1


def add_region(plan: MaskPlan, correction: Correction, width: int, height: int,
               boxes: np.ndarray | None = None) -> MaskPlan:
    """The plan with the region on every frame of ``correction.frames``, under a new (negative) track id.

    ``boxes``: one xyxy box per frame of the range (a region that follows what it covers); None: the
    correction's box on every frame. Boxes are clipped to the frame."""
    first, last = correction.frames or (0, plan.frame_count - 1)
    frames = np.arange(first, last + 1, dtype=np.int64)
    if boxes is None:
        boxes = np.tile(np.asarray(correction.box, np.float32), (len(frames), 1))
    boxes = np.asarray(boxes, np.float32).reshape(len(frames), 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    n = len(frames)
    return MaskPlan(
        plan.frame_count,
        np.concatenate([plan.frame_index, frames]),
        np.concatenate([plan.xyxy.reshape(-1, 4).astype(np.float32), boxes]),
        np.concatenate([plan.cls, np.full(n, REGION_CLASS_NAMES.index(correction.label), np.int64)]),
        np.concatenate([plan.shape, np.full(n, SHAPE_IDS[correction.shape], np.int64)]),
        np.concatenate([plan.track_id, np.full(n, next_manual_track_id(plan), np.int64)]),
    )


def edit_plan(plan: MaskPlan, corrections: Iterable[Correction], width: int, height: int,
              followed: dict[int, np.ndarray] | None = None) -> MaskPlan:
    """The plan with each pixel correction applied in order (approve and reject change nothing).

    ``followed``: per position in ``corrections``, the per-frame boxes of an add_region with ``follow``."""
    followed = followed or {}
    for position, correction in enumerate(corrections):
        if correction.action == "remove_track":
            plan = remove_track(plan, correction)
        elif correction.action == "add_region":
            plan = add_region(plan, correction, width, height, followed.get(position))
    return plan


def _regions_by_frame(plan: MaskPlan) -> dict[int, set[tuple]]:
    regions: dict[int, set[tuple]] = {}
    for i in range(len(plan)):
        box = tuple(round(float(v), 2) for v in plan.xyxy[i])
        regions.setdefault(int(plan.frame_index[i]), set()).add(
            (int(plan.cls[i]), int(plan.shape[i]), int(plan.track_id[i]), box))
    return regions


def changed_frames(before: MaskPlan, after: MaskPlan) -> np.ndarray:
    """The frame indices whose regions differ between two plans of one video (sorted)."""
    old, new = _regions_by_frame(before), _regions_by_frame(after)
    return np.array(sorted(f for f in old.keys() | new.keys() if old.get(f) != new.get(f)), np.int64)
