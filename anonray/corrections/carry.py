"""Corrections carried into a new detection pass (``anonray run --force`` over corrected outputs).

What the reviewers changed is read as the difference between two regions parts of the file: those of the
last detection run before an apply (``before``) and those of the apply's output (``corrected``); a file corrected,
rerun and corrected again has one such link per apply, all carried.
Regions drawn by hand (negative track ids) are carried as they are. A detector track the reviewers removed
on some frames removes, on those frames, every new track that overlaps it there (IoU >= CARRY_IOU on at
least half of them). A removal that a new track overlaps on only some of those frames cannot be carried
for sure: the file is flagged ``corrections_unmapped`` (and masked as detected there). No Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anonray.box_overlap import box_areas, intersection_areas
from anonray.types import CLASS_NAMES, MaskPlan

CARRY_IOU = 0.3
FLAG_CORRECTIONS_UNMAPPED = "corrections_unmapped"


@dataclass(frozen=True)
class CarrySource:
    """Where a file's corrections are read from (the driver finds them; render carries them)."""

    links: tuple[tuple[str, str], ...]
    """(detection run, the apply that corrected its output), oldest first: each later detection run carried the
    corrections before it, and each link holds the removals of its apply (and the applies chained after it)."""
    sha256_in: str
    """The input the corrections were made on: a changed input cannot take them."""
    correction_ids: tuple[str, ...]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` (n, 4) with each of ``b`` (m, 4): (n, m)."""
    inter = intersection_areas(a, b)
    return inter / np.maximum(box_areas(a)[:, None] + box_areas(b)[None, :] - inter, 1e-9)


def removed_regions(before: MaskPlan, corrected: MaskPlan) -> dict[tuple[int, int], dict[int, np.ndarray]]:
    """Detector regions of ``before`` missing from ``corrected``: (class, track) -> {frame: box}."""
    kept = {(int(f), int(c), int(t)) for f, c, t in zip(corrected.frame_index, corrected.cls, corrected.track_id,
                                                         strict=True)}
    removed: dict[tuple[int, int], dict[int, np.ndarray]] = {}
    for i in range(len(before)):
        cls, track, frame = int(before.cls[i]), int(before.track_id[i]), int(before.frame_index[i])
        if cls < len(CLASS_NAMES) and track >= 0 and (frame, cls, track) not in kept:
            removed.setdefault((cls, track), {})[frame] = before.xyxy[i]
    return removed


def carry(new: MaskPlan, links: list[tuple[MaskPlan, MaskPlan]]) -> tuple[MaskPlan, bool]:
    """The new plan with the corrections of every (before, corrected) link applied: each link's removed detector
    regions remove the new tracks overlapping them; the regions drawn by hand are the last corrected plan's.
    Returns the plan and whether some removal could not be carried for sure."""
    drop = np.zeros(len(new), bool)
    unmapped = False
    for before, corrected in links:
        for (cls, _), frames in removed_regions(before, corrected).items():
            on = np.isin(new.frame_index, list(frames)) & (new.cls == cls)
            for track in np.unique(new.track_id[on]):
                rows = np.flatnonzero(on & (new.track_id == track))
                old = np.stack([frames[int(new.frame_index[r])] for r in rows])
                overlaps = np.diag(_iou(new.xyxy[rows].astype(np.float64), old.astype(np.float64))) >= CARRY_IOU
                if overlaps.mean() >= 0.5:
                    drop[rows] = True
                elif overlaps.any():
                    unmapped = True
    last = links[-1][1]
    manual = last.track_id < 0
    plan = MaskPlan(new.frame_count,
                    np.concatenate([new.frame_index[~drop], last.frame_index[manual]]),
                    np.concatenate([new.xyxy[~drop].reshape(-1, 4), last.xyxy[manual].reshape(-1, 4)]),
                    np.concatenate([new.cls[~drop], last.cls[manual]]),
                    np.concatenate([new.shape[~drop], last.shape[manual]]),
                    np.concatenate([new.track_id[~drop], last.track_id[manual]]))
    return plan, unmapped
