"""A second look at dark frames: night footage hides plates from the plate model.

Frames whose mean luma is below ``detection.plate.low_light_luma`` get two more looks, their boxes joining
the main model's (overlaps merged by NMS): each dark frame on its own, brightened, through the low-light
model; and stacks of consecutive dark frames, aligned and averaged against sensor noise, then brightened,
through both plate models. Every dark frame gets both looks, also those the plate stride skips; bright
frames pay only for their luma. How the looks work and why: docs/design.md, "detect/low_light.py".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anonray.detect.nms import nms

Boxes = tuple[np.ndarray, np.ndarray]

TARGET_LUMA = 110.0
MAX_GAIN = 4.0
ALIGN_SIDE = 160
"""Long side (pixels) of the thumbnails a stack's camera motion is estimated on."""
MIN_ALIGNMENT = 0.8
"""ECC correlation a frame must reach with its stack's middle frame to join that stack (within a scene the
accuracy harness's dark clips reach 0.98 and more; across a cut ECC fails)."""
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)
"""BT.601 luma from R'G'B' (the weights frame_luma averages with)."""
IDENTITY_WARP = np.array([[1, 0, 0], [0, 1, 0]], np.float32)


def frame_luma(image: np.ndarray) -> float:
    """Mean luma (0..255) of an RGB uint8 image, from every 8th pixel of every 8th row."""
    return float(image[::8, ::8].astype(np.float32).mean(axis=(0, 1)) @ LUMA_WEIGHTS)


def brightened(image: np.ndarray, luma: float) -> np.ndarray:
    """The image with its mean luma raised to TARGET_LUMA (gain at most MAX_GAIN), clipped to uint8."""
    gain = min(MAX_GAIN, TARGET_LUMA / max(luma, 1.0))
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def shrunk(image: np.ndarray, long_side: int) -> np.ndarray:
    """The image with its long side at most ``long_side``, each pixel the average of the pixels it covers
    (which also averages out noise); a smaller image is returned as it is."""
    import cv2

    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _thumbnail(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A grey thumbnail (long side about ALIGN_SIDE, float32) and the image's size in thumbnail pixels."""
    import cv2

    h, w = image.shape[:2]
    factor = max(1.0, max(h, w) / ALIGN_SIDE)
    size = (max(8, round(w / factor)), max(8, round(h / factor)))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32), factor


def camera_motion(image: tuple[np.ndarray, float], reference: tuple[np.ndarray, float]) -> np.ndarray | None:
    """The affine map (2x3, float32) from ``reference`` pixel coordinates to ``image`` pixel coordinates
    (both thumbnails from ``_thumbnail`` of same-size images), or None where they do not align."""
    import cv2

    (moving, factor), (fixed, _) = image, reference
    warp = IDENTITY_WARP.copy()
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    try:
        correlation, warp = cv2.findTransformECC(fixed, moving, warp, cv2.MOTION_AFFINE, criteria, None, 1)
    except cv2.error:  # no convergence: nothing in common (a cut) or nothing to align on
        return None
    if not correlation >= MIN_ALIGNMENT:
        return None
    warp[:, 2] *= factor
    return warp.astype(np.float32)


@dataclass
class Stack:
    """Frames of one scene averaged onto their middle frame."""

    members: list[int]
    """Indices (into the images given to ``stacks``) of the frames averaged."""
    mean: np.ndarray
    """uint8, in the middle frame's pixels."""
    maps: dict[int, np.ndarray]
    """Per member: the affine map (2x3) from the mean's pixel coordinates to that frame's."""


def stacks(images: Sequence[np.ndarray]) -> list[Stack]:
    """``images`` (consecutive frames, one size) as stacks: each frame aligned to the middle frame and
    averaged; the frames that do not align with it (another scene) are stacked again, the same way."""
    import cv2

    thumbs = [_thumbnail(img) for img in images]
    todo = list(range(len(images)))
    out: list[Stack] = []
    while todo:
        middle = todo[(len(todo) - 1) // 2]
        h, w = images[middle].shape[:2]
        total = images[middle].astype(np.float32)
        maps = {middle: IDENTITY_WARP.copy()}
        rest = []
        for i in todo:
            if i == middle:
                continue
            warp = camera_motion(thumbs[i], thumbs[middle])
            if warp is None:
                rest.append(i)
                continue
            total += cv2.warpAffine(images[i], warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REPLICATE)
            maps[i] = warp
        mean = np.clip(total / len(maps) + 0.5, 0, 255).astype(np.uint8)
        out.append(Stack(sorted(maps), mean, maps))
        todo = rest
    return out


def mapped(xyxy: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """The boxes' corners moved by an affine map (2x3), each box the bounding box of its moved corners."""
    if not len(xyxy):
        return xyxy.reshape(-1, 4).astype(np.float32)
    corners = np.stack([xyxy[:, [0, 1]], xyxy[:, [2, 1]], xyxy[:, [0, 3]], xyxy[:, [2, 3]]], axis=1)
    moved = corners @ warp[:, :2].T + warp[:, 2]
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1).astype(np.float32)


def merge(a: Boxes, b: Boxes, iou: float) -> Boxes:
    """Two detectors' boxes for one image as one set: the union, overlaps above ``iou`` kept once (NMS)."""
    if not len(b[0]):
        return a
    if not len(a[0]):
        return b
    xyxy = np.concatenate([a[0], b[0]]).astype(np.float32)
    score = np.concatenate([a[1], b[1]]).astype(np.float32)
    keep = np.sort(nms(xyxy, score, iou))
    return xyxy[keep], score[keep]


class Ensemble:
    """Several detectors as one: ``detect(images)`` gives each image the union of their boxes (NMS)."""

    def __init__(self, detectors: Sequence, iou: float) -> None:
        self.detectors = list(detectors)
        self.iou = iou

    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        out: list[Boxes] | None = None
        for det in self.detectors:
            found = det.detect(images)
            out = found if out is None else [merge(a, b, self.iou) for a, b in zip(out, found, strict=True)]
        return out if out is not None else [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)) for _ in images]


def _runs(indices: list[int], frame_indices: Sequence[int], longest: int) -> list[list[int]]:
    """``indices`` cut into runs of consecutive frame indices, each at most ``longest`` long."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and len(runs[-1]) < longest and int(frame_indices[i]) == int(frame_indices[runs[-1][-1]]) + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def with_low_light_pass(images: Sequence[np.ndarray], frame_indices: Sequence[int], found: list[Boxes | None],
                        looks: tuple, max_luma: float, iou: float, input_size: int, stack: int,
                        unbrightened: bool = False) -> list[Boxes | None]:
    """``found`` (the main model's boxes per image; None for an image it did not look at, such as a frame
    between detection strides) with the low-light looks' boxes (module docstring) merged in for every image
    darker than ``max_luma``. ``looks``: the detector for each dark frame on its own (brightened, full size;
    with ``unbrightened`` also as it is) and the one for the stacks' averages (images of ``input_size`` long
    side); either may be None."""
    luma = [frame_luma(img) for img in images]
    dark = [i for i in range(len(images)) if luma[i] < max_luma]
    if not dark:
        return found
    frame_look, stack_look = looks
    out = list(found)

    def add(i: int, boxes: Boxes) -> None:
        out[i] = boxes if out[i] is None else merge(out[i], boxes, iou)

    if frame_look is not None:  # one call: each dark frame brightened, then (unbrightened) as it is
        looked = [brightened(images[i], luma[i]) for i in dark] + ([images[i] for i in dark] if unbrightened else [])
        for i, boxes in zip(dark * (2 if unbrightened else 1), frame_look.detect(looked), strict=True):
            add(i, boxes)
    if stack_look is None or stack < 1:
        return out
    small = {i: shrunk(images[i], input_size) for i in dark}
    groups: list[tuple[list[int], Stack]] = []
    for run in _runs(dark, frame_indices, stack):
        for s in stacks([small[i] for i in run]):
            groups.append(([run[m] for m in s.members], s))
    extra = stack_look.detect([brightened(s.mean, frame_luma(s.mean)) for _, s in groups])
    for (members, s), (xyxy, score) in zip(groups, extra, strict=True):
        for i, m in zip(members, s.members, strict=True):
            h, w = images[i].shape[:2]
            sh, sw = small[i].shape[:2]
            boxes = mapped(np.asarray(xyxy, np.float32), s.maps[m]) * np.array([w / sw, h / sh] * 2, np.float32)
            add(i, (boxes, np.asarray(score, np.float32)))
    return out
