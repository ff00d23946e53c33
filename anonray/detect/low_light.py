"""A second look at dark frames: night footage hides plates from the plate model.

Frames whose mean luma (on a 1-in-8 grid of pixels) is below ``detection.plate.low_light_luma`` also go,
brightened to a mean luma of ``TARGET_LUMA`` (gain at most ``MAX_GAIN``), through the low-light model
(``detection.plate.low_light_model``); its boxes join the main model's, overlaps merged by NMS. Every
dark frame gets that look, also the frames the plate stride skips. Measured
on the accuracy harness's dark, noisy clip (models/README.md): the default plate model scores that
clip's plate 0 on every frame, brightened at most 0.23; the safelicensing model finds it, brightened,
on about half the frames, and tracking bridges the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Boxes = tuple[np.ndarray, np.ndarray]

TARGET_LUMA = 110.0
MAX_GAIN = 4.0
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def frame_luma(image: np.ndarray) -> float:
    """Mean luma (0..255) of an RGB uint8 image, from every 8th pixel of every 8th row."""
    return float(image[::8, ::8].astype(np.float32).mean(axis=(0, 1)) @ _LUMA_WEIGHTS)


def brightened(image: np.ndarray, luma: float) -> np.ndarray:
    """The image with its mean luma raised to TARGET_LUMA (gain at most MAX_GAIN), clipped to uint8."""
    gain = min(MAX_GAIN, TARGET_LUMA / max(luma, 1.0))
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def merge(a: Boxes, b: Boxes, iou: float) -> Boxes:
    """Two detectors' boxes for one image as one set: the union, overlaps above ``iou`` kept once (NMS)."""
    if not len(b[0]):
        return a
    if not len(a[0]):
        return b
    import torch
    import torchvision

    xyxy = np.concatenate([a[0], b[0]]).astype(np.float32)
    score = np.concatenate([a[1], b[1]]).astype(np.float32)
    keep = torchvision.ops.nms(torch.from_numpy(xyxy), torch.from_numpy(score), iou).numpy()
    keep.sort()
    return xyxy[keep], score[keep]


def with_low_light_pass(images: Sequence[np.ndarray], found: list[Boxes | None], detector, max_luma: float,
                        iou: float) -> list[Boxes | None]:
    """``found`` (the main model's boxes per image; None for an image it did not look at, such as a frame
    between detection strides) with the low-light detector's boxes merged in for every image darker than
    ``max_luma``."""
    lumas = [frame_luma(img) for img in images]
    dark = [i for i, luma in enumerate(lumas) if luma < max_luma]
    if not dark:
        return found
    extra = detector.detect([brightened(images[i], lumas[i]) for i in dark])
    out = list(found)
    for i, boxes in zip(dark, extra, strict=True):
        out[i] = boxes if found[i] is None else merge(found[i], boxes, iou)
    return out
