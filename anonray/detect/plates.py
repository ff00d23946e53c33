"""Licence-plate detector: a YOLOv8n checkpoint run through ultralytics, fully offline.

ultralytics letterboxes every image to ``imgsz`` itself (upscaling small images too, which helps
small plates), and returns boxes in the coordinates of the image passed in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from anonray.detect.letterbox import check_rgb_uint8, chunks

Boxes = tuple[np.ndarray, np.ndarray]


# ultralytics decides at import time whether it is online (a DNS probe) and, if so, may send
# analytics or fetch assets; forcing offline mode before its first import stops all of that.
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_VERBOSE", "False")


def _offline_ultralytics():
    """Import ultralytics with its network features off."""
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO

    return YOLO


class PlateDetector:
    """Batched plate detection: ``detect(images) -> [(xyxy, score), ...]``."""

    def __init__(
        self,
        model_path: Path,
        *,
        input_size: int = 1280,
        threshold: float = 0.25,
        nms_iou: float = 0.5,
        device: str | torch.device = "cpu",
        half: bool = False,
        batch_size: int = 8,
    ) -> None:
        YOLO = _offline_ultralytics()
        self.model = YOLO(str(model_path), task="detect")
        self.input_size = input_size
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.device = torch.device(device)
        self.half = bool(half and self.device.type == "cuda")
        self.batch_size = batch_size

    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        """Plates in each HxWx3 uint8 RGB image, in that image's pixel coordinates."""
        out: list[Boxes] = []
        for img in images:
            check_rgb_uint8(img)
        for part in chunks(len(images), self.batch_size):
            bgr = [np.ascontiguousarray(img[:, :, ::-1]) for img in images[part]]
            results = self.model.predict(
                bgr,
                imgsz=self.input_size,
                conf=self.threshold,
                iou=self.nms_iou,
                device=str(self.device),
                half=self.half,
                verbose=False,
                save=False,
            )
            for r in results:
                boxes = r.boxes
                out.append((
                    boxes.xyxy.float().cpu().numpy().astype(np.float32).reshape(-1, 4),
                    boxes.conf.float().cpu().numpy().astype(np.float32),
                ))
        return out
