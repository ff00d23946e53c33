"""ultralytics' predict steps around a YOLOv8 detection network, in numpy and OpenCV (no torch).

The same geometry and NMS as ultralytics 8.4 (``LetterBox``, ``nms.non_max_suppression``,
``ops.scale_boxes``): tests/test_torch_free.py checks them against it on real images.
"""

from __future__ import annotations

import cv2
import numpy as np

from anonray.detect.nms import batched_nms

PAD_VALUE = 114
"""ultralytics' letterbox padding (grey)."""


def letterbox(image: np.ndarray, size: int, stride: int, auto: bool) -> np.ndarray:
    """``LetterBox(size, auto=auto, stride=stride)(image=image)``: the image resized (bilinear, aspect kept,
    upscaled too) to fit a square of ``size``, padded around its centre with PAD_VALUE to that square, or
    with ``auto`` only to the next multiple of ``stride``."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = size - new_w, size - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(image, round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1),
                              cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)


def non_max_suppression(pred: np.ndarray, conf: float, iou: float, max_det: int = 300,
                        max_nms: int = 30000) -> list[tuple[np.ndarray, np.ndarray]]:
    """``non_max_suppression(pred, conf, iou, max_det=max_det)`` on the raw network output (batch,
    4 + classes, anchors; boxes as centre xywh): per image (xyxy, score) float32, highest score first. Each
    box keeps its best class, scored above ``conf``; NMS runs per class."""
    out = []
    for p in np.asarray(pred, np.float32):
        p = p.T
        score = p[:, 4:].max(axis=1)
        p, score = p[score > conf], score[score > conf]
        if len(p) > max_nms:
            top = np.argsort(-score, kind="stable")[:max_nms]
            p, score = p[top], score[top]
        half = p[:, 2:4] / 2
        xyxy = np.concatenate([p[:, :2] - half, p[:, :2] + half], axis=1)
        keep = batched_nms(xyxy, score, p[:, 4:].argmax(axis=1), iou)[:max_det]
        out.append((xyxy[keep], score[keep]))
    return out


def scale_boxes(from_shape: tuple[int, ...], xyxy: np.ndarray, to_shape: tuple[int, ...]) -> np.ndarray:
    """``ops.scale_boxes``: boxes on a letterboxed input of ``from_shape`` (h, w) back on the image of
    ``to_shape`` (padding off, gain undone), clipped to it."""
    (h1, w1), (h0, w0) = from_shape[:2], to_shape[:2]
    gain = min(h1 / h0, w1 / w0)
    new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    pad = np.array([round((w1 - new_w) / 2 - 0.1), round((h1 - new_h) / 2 - 0.1)] * 2, np.float32)
    out = (np.asarray(xyxy, np.float32) - pad) / np.array([new_w / w0, new_h / h0] * 2, np.float32)
    out[:, 0::2] = out[:, 0::2].clip(0, w0)
    out[:, 1::2] = out[:, 1::2].clip(0, h0)
    return out
